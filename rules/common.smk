# Shared helpers for the rules: dataset lookups, input functions and the conda environment.
# Every path pattern and the run-name grammar live in port.paths (imported as `paths`).

ENV = "../envs/port.yaml"


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def run_seed(wildcards):
    """The trainer's seed: the config's root seed combined with the run's seed."""
    return derive_seed(config["seed"], "run", int(wildcards.seed))


def trained_generator_model(wc):
    """The pipeline-trained model a generator samples from (none for hub ids and npz sets)."""
    path = settings.generation.pipeline_model(config, wc.dataset, wc.generator)
    return [path] if path else []


def fetched_generator_model(wc):
    """The folder rule fetch_model downloads a hub id or URL into (none for models on disk)."""
    remote = settings.generation.remote_model(config, wc.dataset, wc.generator)
    return [paths.FETCHED_MODEL.format(dataset=wc.dataset, generator=wc.generator)] if remote else []


def fetched_source(wc):
    """The folder rule fetch_source extracts a `download: true` source into (none for data on disk)."""
    return paths.FETCHED_SOURCE.format(dataset=wc.dataset) if dataset_cfg(wc)["source"].get("download") else []


def generator_files(wc):
    """What a shard's `source` names on disk: the pipeline-trained model, the fetched copy of a hub
    id or URL, or a local model or an imported npz set's parts named in config (checked)."""
    return (trained_generator_model(wc) or fetched_generator_model(wc)
            or port_inputs.generator_inputs(config, wc.dataset, wc.generator))


def npz_reference(wc):
    """The real training set an imported npz set's images must match."""
    npz = dataset_cfg(wc)["generators"][wc.generator]["kind"] == "npz"
    return paths.TRAIN.format(dataset=wc.dataset) if npz else []


def generator_source(wc):
    """What the shard reads: a pipeline-trained model, the fetched copy of a hub id or URL, a local
    directory or pickle, or an npz file."""
    gen = dataset_cfg(wc)["generators"][wc.generator]
    trained, fetched = trained_generator_model(wc), fetched_generator_model(wc)
    if fetched:
        return settings.generation.fetched_source(fetched[0], gen["model"])
    return trained[0] if trained else gen.get("model", gen.get("path"))


def selected_images(dataset, selection):
    """The training generator's (or mixture's) images of one selection."""
    return settings.generation.selected_path(config, dataset, config["datasets"][dataset]["training"]["generator"], selection)


def mixture_member_files(pattern, when=lambda wc: True):
    """Input function: `pattern` (a paths.SYNTHETIC file) of every member of the mixture, if `when`."""
    return lambda wc: [pattern.format(dataset=wc.dataset, generator=member)
                       for member in settings.generation.mixture_members(config, wc.dataset, wc.mixture)] if when(wc) else []


def synthetic_input(wc):
    """PORT trains on one selection of the training generator's images; the baseline on real data only."""
    selection = paths.selection_of(wc.method)
    return [] if selection is None else selected_images(wc.dataset, selection)


def shard_files(pattern, count):
    """Input function: one file per shard; count(dataset config, wildcards) gives how many."""
    return lambda wc: [pattern.format(shard=i, **dict(wc.items())) for i in range(count(dataset_cfg(wc), wc))]


def selection_scores(wc):
    """Adaptive and score-group selections read the merged synthetic scores."""
    return paths.SCORES.format(**dict(wc.items())) if paths.needs_scores(wc.selection) else []


def selection_labels(wc):
    """Confidence selection reads the labeler's class probabilities."""
    return paths.LABELS.format(**dict(wc.items())) if wc.selection == "confidence" else []


def selection_audit(wc):
    """With audit.drop, selection leaves out the audit's near-duplicates of test images."""
    return paths.AUDIT.format(**dict(wc.items())) if dataset_cfg(wc)["audit"]["drop"] else []


def grid_index(wc):
    """The grid index `i` of discriminator `eps{i}`, checked against the dataset's grid."""
    grid = dataset_cfg(wc)["discrimination"]["eps"]
    index = int(wc.eps_index)
    if index >= len(grid):
        raise ValueError(f"eps{index}: datasets.{wc.dataset}.discrimination.eps has {len(grid)} values")
    return index


def discriminator_eps(wc):
    """The eps of discriminator `eps{i}`: the i-th value of the dataset's grid."""
    return dataset_cfg(wc)["discrimination"]["eps"][grid_index(wc)]


def discriminator_curriculum_parent(wc):
    """The trained discriminator (same seed) that `eps{i}` starts from under the curriculum (none: [])."""
    parent = settings.discrimination.curriculum_parent(config, wc.dataset, grid_index(wc))
    return [] if parent is None else paths.DISCRIMINATOR_MODEL.format(**{**dict(wc.items()), "eps_index": parent})


def ranked(pattern):
    """Input function: the pattern for every ranked generator of the dataset."""
    return lambda wc: [pattern.format(dataset=wc.dataset, generator=g)
                       for g in settings.discrimination.ranked_generators(config, wc.dataset)]


def score_group_runs(pattern):
    """Input function: a paths.RUN_* file of every score-group PORT run."""
    def files(wc):
        groups = dataset_cfg(wc)["score_groups"]
        return settings.training.run_paths(config, wc.dataset, groups["threat"], pattern,
                                     settings.evaluation.score_group_methods(config, wc.dataset))
    return files


def smoothing_runs(pattern):
    """Input function: `pattern` (paths.SMOOTH_* or CERTIFICATE) of every randomized-smoothing run."""
    return lambda wc: [pattern.format(dataset=wc.dataset, method=m, arch=a, seed=s)
                       for m, a, s in settings.smoothing.smoothing_runs(config, wc.dataset)]
