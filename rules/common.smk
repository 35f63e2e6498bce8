# Shared helpers for the rules: dataset lookups and the conda environment.

ENV = "../envs/port.yaml"


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def run_seed(wildcards):
    """The trainer's seed: the config's root seed combined with the run's seed."""
    return derive_seed(config["seed"], "run", int(wildcards.seed))


def trained_generator_model(wc):
    """The pipeline-trained model a generator samples from (none for hub ids and npz sets)."""
    path = port_config.pipeline_model(config, wc.dataset, wc.generator)
    return [path] if path else []


def generator_source(wc):
    """What the shard reads: a pipeline-trained model, a hub id or directory, or an npz file."""
    gen = dataset_cfg(wc)["generators"][wc.generator]
    trained = trained_generator_model(wc)
    return trained[0] if trained else gen.get("model", gen.get("path"))


RUN = "results/{dataset}/runs/{threat}/{method}/{arch}/seed{seed}"
SYNTHETIC = "results/{dataset}/synthetic/{generator}"


def synthetic_input(wc):
    """PORT trains on one selection of the training generator's images; the baseline on real data only."""
    selection = port_config.selection_of(wc.method)
    if selection is None:
        return []
    generator = dataset_cfg(wc)["training"]["generator"]
    return f"results/{wc.dataset}/synthetic/{generator}/selected/{selection}.h5"


def shard_files(pattern, count):
    """Input function: one file per shard; count(dataset config, wildcards) gives how many."""
    return lambda wc: [pattern.format(shard=i, **dict(wc.items())) for i in range(count(dataset_cfg(wc), wc))]
