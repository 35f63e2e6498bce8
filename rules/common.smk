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


def selection_scores(wc):
    """Adaptive and score-group selections read the merged synthetic scores."""
    return f"{SYNTHETIC}/scores.h5".format(**dict(wc.items())) if needs_scores(wc.selection) else []


def selection_labels(wc):
    """Confidence selection reads the labeler's class probabilities."""
    return f"{SYNTHETIC}/labels.h5".format(**dict(wc.items())) if wc.selection == "confidence" else []


def discriminator_eps(wc):
    """The eps of discriminator `eps{i}`: the i-th value of the dataset's grid."""
    grid = dataset_cfg(wc)["discrimination"]["eps"]
    index = int(wc.eps_index)
    if index >= len(grid):
        raise ValueError(f"eps{index}: datasets.{wc.dataset}.discrimination.eps has {len(grid)} values")
    return grid[index]


def ranked(pattern):
    """Input function: the pattern for every ranked generator of the dataset."""
    return lambda wc: [pattern.format(dataset=wc.dataset, generator=g)
                       for g in port_config.ranked_generators(config, wc.dataset)]


def score_group_runs(filename):
    """Input function: a file of every score-group PORT run."""
    def paths(wc):
        groups = dataset_cfg(wc)["score_groups"]
        return port_config.run_paths(config, wc.dataset, groups["threat"], filename,
                                     port_config.score_group_methods(config, wc.dataset))
    return paths
