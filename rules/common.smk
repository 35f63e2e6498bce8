# Shared helpers for the rules: dataset lookups and the conda environment.

ENV = "../envs/port.yaml"


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def run_seed(wildcards):
    """The trainer's seed: the config's root seed combined with the run's seed."""
    return derive_seed(config["seed"], "run", int(wildcards.seed))
