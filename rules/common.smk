# Shared helpers for the rules: dataset lookups and the conda environment.

ENV = "../envs/port.yaml"


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def run_seed(wildcards):
    """The trainer's seed: the config's root seed combined with the run's seed."""
    return derive_seed(config["seed"], "run", int(wildcards.seed))


def trained_model_dir(wc):
    name = port_config.trained_diffusion_model(config, wc.dataset, wc.generator)
    return [f"results/{wc.dataset}/diffusion/{name}"] if name else []


def generator_source(wc):
    """What the shard reads: a pipeline-trained model directory, a hub id/directory, or an npz."""
    gen = dataset_cfg(wc)["generators"][wc.generator]
    trained = trained_model_dir(wc)
    return trained[0] if trained else gen.get("model", gen.get("path"))


RUN = "results/{dataset}/runs/{threat}/{method}/{arch}/seed{seed}"


def synthetic_input(wc):
    """PORT trains on the selected synthetic set; the baseline on real data only."""
    if wc.method == "baseline":
        return []
    ds = dataset_cfg(wc)
    generator = ds["training"]["generator"]
    return f"results/{wc.dataset}/synthetic/{generator}/selected/{ds['selection']['method']}.h5"
