"""Config helpers for the Snakefile: cross-field checks and the per-stage settings.

Each rule gets its stage's settings through `params:` as plain builtins with sorted keys,
so editing one value reruns exactly that stage and what depends on it, and reordering
keys in the YAML file reruns nothing.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

from . import paths

TRAINING_RUN_KEYS = ("generator", "architectures", "seeds")
SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"  # the package is installed editable
# The config block whose settings (batch_size, ...) each training rule passes to the trainer
# (a recipe variant's block overrides the dataset's `training` block).
TRAINER_BLOCKS = {"train_robust": "training", "train_smooth": "training", "train_transfer": "training",
                  "train_discriminator": "discrimination", "train_scorer": "discrimination",
                  "train_nonrobust_discriminator": "discrimination",
                  "train_sample_complexity": "studies.sample_complexity", "train_filter_study": "studies.filter"}
# Defaults of generator keys that only one kind reads; kept out of the schema so that adding a
# kind does not change (and rerun) the other kinds' sampling settings.
KIND_DEFAULTS = {"stylegan": {"truncation_psi": 1.0, "noise_mode": "const", "class_labels": None}}
LABEL_SOURCES = ("generator", "lanet")
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}  # classes of the built-in dataset kinds
CONDITIONAL_KINDS = ("gan", "stylegan", "npz")  # kinds whose shards may carry the generator's labels


class ConfigError(ValueError):
    """A configuration that the schema accepts but that cannot work."""


class SettingsError(ConfigError):
    """Settings that a stage itself finds unworkable (an unknown name, a value out of range), as
    opposed to an ArtifactError (a bad input file)."""


@functools.cache
def schema_defaults(definition: str) -> dict:
    """The defaults of one `$defs` block of config/schema.yaml, the one home of every default."""
    import yaml

    if not SCHEMA.is_file():
        raise ConfigError(f"{SCHEMA}: the config schema is missing (install the package editable, `pip install -e .`)")
    properties = yaml.safe_load(SCHEMA.read_text())["$defs"][definition]["properties"]
    return {key: spec["default"] for key, spec in properties.items() if "default" in spec}


def canonical(value):
    """Builtins with dict keys sorted recursively (a stable repr for Snakemake's params check)."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def check_config(config: dict) -> None:
    """Raise ConfigError naming the key when values contradict each other."""
    for name in config.get("default_datasets", []):
        if name not in config["datasets"]:
            raise ConfigError(f"default_datasets: '{name}' is not a key of datasets")
    for name, ds in config["datasets"].items():
        where = f"datasets.{name}"
        source = ds["source"]
        if source["kind"] == "npz" and not (source.get("train") and source.get("test")):
            raise ConfigError(f"{where}.source: kind npz needs `train` and `test` npz paths")
        if source["kind"] in ("cifar10", "cifar100") and not source.get("root"):
            raise ConfigError(f"{where}.source: kind {source['kind']} needs `root`")
        for gen_name, gen in ds["generators"].items():
            at = f"{where}.generators.{gen_name}"
            if gen["kind"] == "diffusers":
                for key in ("model", "n_images"):
                    if key not in gen:
                        raise ConfigError(f"{at}: kind diffusers needs `{key}`")
                if gen["n_shards"] > gen["n_images"]:
                    raise ConfigError(f"{at}: n_shards ({gen['n_shards']}) exceeds n_images ({gen['n_images']})")
            elif gen["kind"] == "gan":
                if gen.get("model") not in ds.get("gan_models", {}) or "n_images" not in gen:
                    raise ConfigError(f"{at}: kind gan needs `n_images` and a `model` that is a key of {where}.gan_models")
            elif gen["kind"] == "stylegan":
                for key in ("model", "n_images"):
                    if key not in gen:
                        raise ConfigError(f"{at}: kind stylegan needs `{key}` (an official network pickle)")
            elif not gen.get("path"):
                raise ConfigError(f"{at}: kind npz needs `path`")
            other_kind = [key for kind, defaults in KIND_DEFAULTS.items() if kind != gen["kind"]
                          for key in defaults if key in gen]
            if other_kind:
                raise ConfigError(f"{at}: {', '.join(other_kind)} only apply to kind stylegan")
            conditional_ddpm = ds.get("diffusion_models", {}).get(gen.get("model"), {}).get("class_conditional")
            if gen.get("labels_from") == "generator" and not (gen["kind"] in CONDITIONAL_KINDS or conditional_ddpm):
                raise ConfigError(f"{at}: labels_from generator needs a generator that records labels (kinds "
                                  f"{', '.join(CONDITIONAL_KINDS)}, or a class_conditional diffusion_models entry)")
        for model_name, model in ds.get("diffusion_models", {}).items():
            levels = model.get("attention_levels", [])
            if any(level >= len(model["block_out_channels"]) for level in levels):
                raise ConfigError(f"{where}.diffusion_models.{model_name}.attention_levels: "
                                  f"levels must be below {len(model['block_out_channels'])}")
        if ds["training"]["generator"] not in ds["generators"]:
            raise ConfigError(f"{where}.training.generator: '{ds['training']['generator']}' "
                              f"is not a key of {where}.generators")
        for name in ds["generator_ranking"]["generators"]:
            if name not in ds["generators"]:
                raise ConfigError(f"{where}.generator_ranking.generators: '{name}' is not a key of {where}.generators")
        for block in ("generator_ranking", "score_groups"):
            if ds[block]["threat"] not in ds["threats"]:
                raise ConfigError(f"{where}.{block}.threat: '{ds[block]['threat']}' is not a key of {where}.threats")
        grid = ds["discrimination"]["eps"]
        if grid != sorted(set(grid)):
            raise ConfigError(f"{where}.discrimination.eps: must be increasing without repeats, got {grid}")
        disc = ds["discrimination"]
        if disc["eval_steps"] < disc["steps"]:  # same step_factor: fewer steps is a weaker attack
            raise ConfigError(f"{where}.discrimination.eval_steps: evaluation PGD ({disc['eval_steps']} steps) must "
                              f"not be weaker than training PGD ({disc['steps']} steps)")
        if disc["eps_warmup_epochs"] >= disc["epochs"]:
            raise ConfigError(f"{where}.discrimination.eps_warmup_epochs: {disc['eps_warmup_epochs']} leaves no epoch "
                              f"at the full eps out of {disc['epochs']}")
        methods = ds["selection"]["methods"]
        if len(set(methods)) != len(methods):
            raise ConfigError(f"{where}.selection.methods: repeated method in {methods}")
        for threat_name, threat in ds["threats"].items():
            if threat["eps"] > 0 and threat["step_size"] == 0:
                raise ConfigError(f"{where}.threats.{threat_name}.step_size: must be > 0 when eps > 0")
        _check_trades(ds["training"], f"{where}.training")
        if "recipe_study" in ds:
            study = ds["recipe_study"]
            if study["threat"] not in ds["threats"]:
                raise ConfigError(f"{where}.recipe_study.threat: '{study['threat']}' is not a key of {where}.threats")
            for variant, overrides in study["variants"].items():
                _check_trades({**ds["training"], **overrides.get("training", {})}, f"{where}.recipe_study.variants.{variant}")


def _check_trades(training: dict, where: str) -> None:
    """TRADES crafts its attack with BatchNorm frozen (Wang et al. 2023), so it asks for it explicitly."""
    if training.get("loss") == "trades" and training.get("attack_batchnorm") != "eval":
        raise ConfigError(f"{where}.attack_batchnorm: loss trades crafts its attack with BatchNorm frozen, "
                          f"set attack_batchnorm: eval")


def pipeline_model(config: dict, dataset: str, generator: str) -> str | None:
    """Path of the model a generator samples from when the pipeline trains it (a DDPM
    directory or a GAN checkpoint); None for hub ids, outside directories and npz sets."""
    ds = config["datasets"][dataset]
    gen = ds["generators"][generator]
    model = gen.get("model")
    if gen["kind"] == "diffusers" and model in ds.get("diffusion_models", {}):
        return paths.DIFFUSION_MODEL.format(dataset=dataset, model=model)
    if gen["kind"] == "gan":
        return paths.GAN_MODEL.format(dataset=dataset, model=model)
    return None


def source_files(config: dict, dataset: str) -> dict[str, str]:
    """The npz files a dataset is read from ({} for built-in datasets), by split."""
    source = config["datasets"][dataset]["source"]
    return {split: source[split] for split in ("train", "test")} if source["kind"] == "npz" else {}


def generator_files(config: dict, dataset: str, generator: str) -> list[str]:
    """What a generator reads from outside the pipeline, by path: the parts of a pre-sampled npz
    set (npz files or .npy pairs), or a local `model` (a save_pretrained directory, a StyleGAN
    pickle); [] for hub ids, URLs and pipeline-trained models."""
    gen = config["datasets"][dataset]["generators"][generator]
    if gen["kind"] == "npz":
        parts = [gen["path"]] if isinstance(gen["path"], (str, dict)) else gen["path"]
        return [path for part in parts for path in (part.values() if isinstance(part, dict) else [part])]
    model = gen.get("model")
    if gen["kind"] in ("diffusers", "stylegan") and pipeline_model(config, dataset, generator) is None \
            and model and os.path.exists(model):
        return [model]
    return []


def labeler_checkpoint(config: dict, dataset: str, slot: str) -> str | None:
    """The trained model a labeler slot takes instead of training (None: the pipeline trains it)."""
    return config["datasets"][dataset]["labelers"][slot].get("checkpoint")


def trainer_block(rule: str, wildcards, config: dict) -> str:
    """The config key of a training rule's settings, for error messages (`datasets.digits.training`)."""
    values = dict(wildcards.items())
    if rule == "train_recipe":  # a recipe-study or gamma-sweep variant: train_recipe trains both
        return variant(config, values["dataset"], values["variant"])["key"]
    return f"datasets.{values['dataset']}." + TRAINER_BLOCKS[rule].format(**values)


def generator_settings(config: dict, dataset: str, generator: str) -> dict:
    """What a sampling shard needs: the generator's block with its kind's defaults, without the
    labelling choice (labels_from reaches the pseudo-label stage, not the sampler)."""
    ds = config["datasets"][dataset]
    gen = ds["generators"][generator]
    settings = {**KIND_DEFAULTS.get(gen["kind"], {}), **gen}
    settings.pop("labels_from", None)
    if gen["kind"] == "npz":  # imported labels are checked against the dataset's classes
        settings["num_classes"] = ds["source"].get("num_classes") or NUM_CLASSES.get(ds["source"]["kind"])
    return canonical(settings)


def labels_from(config: dict, dataset: str, generator: str) -> str:
    """Where a generator's pseudo-labels come from: its own classes or lanet (the default)."""
    return config["datasets"][dataset]["generators"][generator].get("labels_from", "lanet")


def compute_settings(config: dict, dataset: str) -> dict:
    """The dataset's `compute` block (precision, compile): part of every GPU stage's settings."""
    return canonical(config["datasets"][dataset].get("compute", {}))


def labeler_settings(config: dict, dataset: str, slot: str) -> dict:
    return canonical({**config["datasets"][dataset]["labelers"][slot],
                      "compute": compute_settings(config, dataset)})


def _run_settings(ds: dict, method: str) -> dict:
    """The shared training block without the run keys. The baseline has no synthetic half, so
    its gamma is 1.0 (as in the summary tables): editing gamma does not rerun baselines."""
    settings = {k: v for k, v in ds["training"].items() if k not in TRAINING_RUN_KEYS}
    settings["compute"] = canonical(ds.get("compute", {}))
    if method == paths.BASELINE:
        settings["gamma"] = 1.0
    return settings


def training_settings(config: dict, dataset: str, threat: str, arch: str, method: str = "port") -> dict:
    """What the trainer needs for one run: the shared training block, the arch and the threat."""
    ds = config["datasets"][dataset]
    return canonical({**_run_settings(ds, method), "arch": arch, "threat": ds["threats"][threat]})


def smoothing_epochs(config: dict, dataset: str) -> int:
    ds = config["datasets"][dataset]
    return ds["smoothing"].get("epochs", ds["training"]["epochs"])


def smoothing_settings(config: dict, dataset: str, arch: str, method: str = "port") -> dict:
    """The trainer's settings for stability training: the training block with the noise model."""
    ds = config["datasets"][dataset]
    smoothing = ds["smoothing"]
    settings = _run_settings(ds, method)
    settings["epochs"] = smoothing_epochs(config, dataset)
    return canonical({**settings, "arch": arch, "threat": None,
                      "smoothing": {"sigma": smoothing["sigma"], "beta": smoothing["beta"]}})


def certify_settings(config: dict, dataset: str) -> dict:
    smoothing = config["datasets"][dataset]["smoothing"]
    return canonical({**smoothing["certify"], "sigma": smoothing["sigma"],
                      "compute": compute_settings(config, dataset)})


def run_methods(config: dict, dataset: str) -> list[str]:
    """Run names of the result tables: the real-data baseline and PORT on each selection."""
    selections = [None, *config["datasets"][dataset]["selection"]["methods"]]
    return [paths.run_name(selection) for selection in selections]


def smoothing_runs(config: dict, dataset: str) -> list[tuple[str, str, int]]:
    """(method, arch, seed) of every randomized-smoothing run: baseline and PORT on the first selection."""
    ds = config["datasets"][dataset]
    archs = ds["smoothing"].get("architectures", ds["training"]["architectures"])
    methods = run_methods(config, dataset)[:2]
    return [(method, arch, seed) for method in methods for arch in archs for seed in ds["training"]["seeds"]]


def training_runs(config: dict, dataset: str, methods=None, seeds=None) -> list[tuple[str, str, int]]:
    """(method, arch, seed) of every adversarial-training run of a threat model, in table order
    (seeds: training.seeds unless given)."""
    training = config["datasets"][dataset]["training"]
    methods = run_methods(config, dataset) if methods is None else methods
    seeds = training["seeds"] if seeds is None else seeds
    return [(method, arch, seed) for method in methods for arch in training["architectures"] for seed in seeds]


def run_paths(config: dict, dataset: str, threat: str, pattern: str, methods=None, seeds=None) -> list[str]:
    """`pattern` (a paths.RUN_* file) for every method, architecture and seed of one threat model."""
    return [pattern.format(dataset=dataset, threat=threat, method=method, arch=arch, seed=seed)
            for method, arch, seed in training_runs(config, dataset, methods, seeds)]


def seed_study_paths(config: dict, dataset: str, pattern: str) -> list[str]:
    """`pattern` (a paths.RUN_* file) for the baseline and PORT runs of every threat model over
    `seed_study.seeds`: the same runs as the result tables', with more seeds (`seeds.csv`)."""
    ds = config["datasets"][dataset]
    return [path for threat in ds["threats"]
            for path in run_paths(config, dataset, threat, pattern, seeds=ds["seed_study"]["seeds"])]


def run_labels(config: dict, dataset: str) -> list[str]:
    """Legend labels of the runs, in run_paths order."""
    return [f"{method} {arch} seed{seed}" for method, arch, seed in training_runs(config, dataset)]


def score_group_methods(config: dict, dataset: str) -> list[str]:
    groups = config["datasets"][dataset]["score_groups"]
    return [paths.run_name(paths.group_selection(g)) for g in range(groups["n_groups"])]


def evaluation_settings(config: dict, dataset: str, method: str) -> dict:
    """The evaluation block; score-group runs may skip AutoAttack (their table reports PGD)."""
    ds = config["datasets"][dataset]
    settings = dict(ds["evaluation"])
    if paths.group_of(paths.selection_of(method)) is not None:
        settings["autoattack"] = ds["score_groups"]["autoattack"]
    return canonical(settings)


def run_config(config: dict, dataset: str, threat: str, arch: str, method: str) -> dict:
    """Everything that made one run: its training settings, evaluation, and for PORT the
    generator and selection it trained on (the RobustBench export's `config`)."""
    ds = config["datasets"][dataset]
    record = {"training": training_settings(config, dataset, threat, arch, method),
              "evaluation": evaluation_settings(config, dataset, method)}
    selection = paths.selection_of(method)
    if selection is not None:
        generator = ds["training"]["generator"]
        record.update(generator={"name": generator, **ds["generators"][generator]},
                      selection={"method": selection, **ds["selection"]}, filter=ds["filter"])
    return canonical(record)


def robustbench_targets(config: dict) -> list[str]:
    """The RobustBench export of every adversarial-training run of the default datasets."""
    return [path for name in config.get("default_datasets", []) for threat in config["datasets"][name]["threats"]
            for path in run_paths(config, name, threat, paths.ROBUSTBENCH_INFO)]


def recipe_runs(config: dict, dataset: str) -> list[tuple[str, str, int]]:
    """(variant, arch, seed) of every run of the recipe study, variants in config order."""
    ds = config["datasets"][dataset]
    study = ds["recipe_study"]
    return [(variant, arch, seed) for variant in study["variants"] for arch in ds["training"]["architectures"]
            for seed in study["seeds"]]


def recipe_paths(config: dict, dataset: str, pattern: str) -> list[str]:
    """`pattern` (a paths.RECIPE_* file) for every run of the recipe study."""
    return [pattern.format(dataset=dataset, variant=variant, arch=arch, seed=seed)
            for variant, arch, seed in recipe_runs(config, dataset)]


def recipe_synthetic(config: dict, dataset: str, name: str) -> str | list:
    """The selection a training variant trains on ([] for a real-data-only variant). A path, not
    a one-item list: Snakemake hands a list input to the script as a Namedlist, not a path."""
    ds, chosen = config["datasets"][dataset], variant(config, dataset, name)
    if not chosen["synthetic"]:
        return []
    return paths.SELECTED.format(dataset=dataset, generator=ds["training"]["generator"], selection=chosen["selection"])


def recipe_settings(config: dict, dataset: str, name: str, arch: str) -> dict:
    """The training block with the variant's overrides, the arch and the variant's threat."""
    ds, chosen = config["datasets"][dataset], variant(config, dataset, name)
    method = "port" if chosen["synthetic"] else "baseline"
    return canonical({**_run_settings(ds, method), **chosen["training"], "arch": arch,
                      "threat": ds["threats"][chosen["threat"]]})


def recipe_row(config: dict, dataset: str, name: str, arch: str, seed: int) -> dict:
    """The identity columns of one variant's run: the variant and the options it varies."""
    settings = recipe_settings(config, dataset, name, arch)
    chosen = variant(config, dataset, name)
    keys = ("loss", "trades_beta", "ema_decay", "label_smoothing", "synthetic_fraction", "gamma", "epochs")
    return {"variant": name, "architecture": arch, "seed": seed,
            "selection": chosen["selection"] if chosen["synthetic"] else "none",
            **{key: settings.get(key) for key in keys}}


def recipe_targets(config: dict) -> list[str]:
    return [paths.RECIPE_SUMMARY.format(dataset=name) for name, ds in config["datasets"].items() if "recipe_study" in ds]


def discriminator_settings(config: dict, dataset: str, eps: float, warmup_from: float = 0.0) -> dict:
    """Trainer settings of the robust discriminator at one eps: balanced real-vs-synthetic
    batches (gamma 0.5), linf PGD at eps ramped up from `warmup_from` (0, or the curriculum's
    previous grid eps) over `eps_warmup_epochs` (a guard against collapse to a constant
    prediction when PGD at the full eps starts on a network that does not separate yet), trained
    until the robust accuracy on the balanced validation set (real split plus as many held-back
    synthetic images) has not improved for `patience` epochs, at most `epochs`, and the weights
    of its best epoch. Both halves get the same crop and flip: augmenting one class only (a
    zero border on real images alone) would be a feature that tells the classes apart."""
    ds = config["datasets"][dataset]
    disc = ds["discrimination"]
    threat = None
    if eps > 0:
        threat = {"norm": "linf", "eps": eps, "step_size": disc["step_factor"] * eps / disc["steps"],
                  "steps": disc["steps"]}
    keys = ("arch", "epochs", "batch_size", "lr", "momentum", "weight_decay", "crop_padding", "flip")
    return canonical({**{k: disc[k] for k in keys}, "gamma": 0.5, "threat": threat, "model_selection": "best",
                      "patience": disc["patience"],
                      "augment_synthetic": True, "eps_warmup_epochs": disc["eps_warmup_epochs"] if threat else 0.0,
                      # only under the curriculum: the settings (and jobs) without it stay as they were
                      **({"eps_warmup_from": warmup_from} if threat and warmup_from else {}),
                      "val_fraction": disc["val_fraction"], "val_attack_steps": disc["steps"],
                      "compute": compute_settings(config, dataset)})


def scorer_settings(config: dict, dataset: str) -> dict:
    """discriminator_settings at `scores.discriminator_eps` for the two cross-fitted scorers, trained
    for the fixed `epochs` and kept at the last: their pools split all the synthetic images, so
    none is left over for a validation set to stop on."""
    settings = discriminator_settings(config, dataset, config["datasets"][dataset]["scores"]["discriminator_eps"])
    return canonical({**{k: v for k, v in settings.items() if k != "patience"}, "model_selection": "last"})


def curriculum_parent(config: dict, dataset: str, eps_index: int) -> int | None:
    """The grid point whose trained discriminator (same generator and seed) the one at `eps_index` starts
    from under `discrimination.curriculum`; None: it starts from random weights."""
    return eps_index - 1 if config["datasets"][dataset]["discrimination"]["curriculum"] and eps_index > 0 else None


def grid_discriminator_settings(config: dict, dataset: str, eps_index: int) -> dict:
    """discriminator_settings at grid point `eps_index`; under the curriculum the eps warm-up starts
    from the previous grid eps, the one its initial weights were trained at."""
    grid = config["datasets"][dataset]["discrimination"]["eps"]
    parent = curriculum_parent(config, dataset, eps_index)
    return discriminator_settings(config, dataset, grid[eps_index], 0.0 if parent is None else grid[parent])


def arc_curve_inputs(config: dict, dataset: str, generator: str) -> list[str]:
    """The metrics of one generator's discriminators: every discrimination seed and eps."""
    disc = config["datasets"][dataset]["discrimination"]
    return [paths.DISCRIMINATOR_METRICS.format(dataset=dataset, generator=generator, eps_index=i, seed=seed)
            for seed in disc["seeds"] for i in range(len(disc["eps"]))]


def discrimination_data_settings(config: dict, dataset: str) -> dict:
    disc = config["datasets"][dataset]["discrimination"]
    return canonical({k: disc[k] for k in ("n_heldout", "n_train_synthetic", "val_fraction")})


def discriminator_eval_settings(config: dict, dataset: str) -> dict:
    disc = config["datasets"][dataset]["discrimination"]
    return canonical({k: disc[k] for k in ("eval_steps", "eval_restarts", "step_factor", "apgd")})


def score_settings(config: dict, dataset: str) -> dict:
    scores = config["datasets"][dataset]["scores"]
    return canonical({**{k: scores[k] for k in ("eps", "steps", "step_factor", "batch_size")},
                      "compute": compute_settings(config, dataset)})


def transfer_settings(config: dict, dataset: str) -> dict:
    """Adversarial training on one generator's synthetic images alone (transferred robustness):
    a single training set, so gamma is 1.0 as for the baseline."""
    ds = config["datasets"][dataset]
    ranking = ds["generator_ranking"]
    return canonical({**_run_settings(ds, paths.BASELINE), "epochs": ranking["epochs"],
                      "arch": ds["training"]["architectures"][0], "threat": ds["threats"][ranking["threat"]]})


def ranked_generators(config: dict, dataset: str) -> list[str]:
    return config["datasets"][dataset]["generator_ranking"]["generators"]


def final_targets(config: dict, datasets=None) -> list[str]:
    """What `snakemake` with no target builds for each default dataset (or each of `datasets`)."""
    names = config.get("default_datasets", []) if datasets is None else datasets
    targets = []
    for name in names:
        ds = config["datasets"][name]
        targets += [pattern.format(dataset=name, threat=threat) for threat in ds["threats"]
                    for pattern in (paths.PORT_TABLE, paths.SEED_SUMMARY)]
        if "smoothing" in ds:
            targets += [paths.CERTIFIED_TABLE.format(dataset=name), paths.CERTIFIED_SUMMARY.format(dataset=name)]
        targets += [paths.TRAINING_CURVES.format(dataset=name, threat=threat) for threat in ds["threats"]]
        targets.append(paths.SAMPLES_PER_CLASS.format(dataset=name, generator=ds["training"]["generator"]))
        if len(ranked_generators(config, name)) >= 2:
            targets += [paths.ARC_TABLE.format(dataset=name), paths.ARC_SUMMARY.format(dataset=name),
                        paths.GENERATOR_RANKING.format(dataset=name)]
        if ds["score_groups"]["enabled"]:
            targets.append(paths.SCORE_GROUP_TABLE.format(dataset=name))
    return targets


def run_row(method: str, arch: str, seed: int) -> dict:
    """The identity columns of one run in the summary tables. How it was trained (gamma, epochs)
    is read from the model's own metadata (port.models.training_record), not from the config."""
    selection = paths.selection_of(method)
    return {"method": paths.BASELINE if selection is None else "port", "selection": selection or "none",
            "architecture": arch, "seed": seed}


# ---- the paper's studies (rules/studies.smk) -------------------------------------------------
def study(config: dict, dataset: str, name: str) -> dict:
    """One block of the dataset's `studies` (schema defaults filled)."""
    studies = config["datasets"][dataset].get("studies")
    if studies is None:
        raise ConfigError(f"datasets.{dataset}.studies: no studies configured for dataset '{dataset}'")
    return studies[name]


def variant(config: dict, dataset: str, name: str) -> dict:
    """A training variant: a recipe_study variant, or a gamma-sweep run (`gamma-<value>`); what it
    overrides in the training block (`training`), whether it trains on synthetic images, its
    threat model, selection, evaluation overrides and config key (for error messages)."""
    ds = config["datasets"][dataset]
    if name in ds.get("recipe_study", {}).get("variants", {}):
        study_block = ds["recipe_study"]
        block = study_block["variants"][name]
        return {"training": block.get("training", {}), "synthetic": block.get("synthetic", True),
                "threat": study_block["threat"], "selection": study_block["selection"], "evaluation": {},
                "key": f"datasets.{dataset}.recipe_study.variants.{name}.training"}
    gamma = paths.gamma_of(name)
    sweep = ds.get("studies", {}).get("gamma")
    if gamma is None or sweep is None or gamma not in [float(v) for v in sweep["values"]]:
        raise ConfigError(f"training variant '{name}': neither a key of datasets.{dataset}.recipe_study.variants nor "
                          f"gamma-<v> for a v in datasets.{dataset}.studies.gamma.values")
    return {"training": {**sweep["training"], "gamma": gamma}, "synthetic": True, "threat": sweep["threat"],
            "selection": sweep["selection"], "evaluation": {"autoattack": sweep["autoattack"]},
            "key": f"datasets.{dataset}.studies.gamma"}


def variant_threat(config: dict, dataset: str, name: str) -> dict:
    return canonical(config["datasets"][dataset]["threats"][variant(config, dataset, name)["threat"]])


def variant_evaluation(config: dict, dataset: str, name: str) -> dict:
    return canonical({**config["datasets"][dataset]["evaluation"], **variant(config, dataset, name)["evaluation"]})


def gamma_runs(config: dict, dataset: str, pattern: str) -> list[str]:
    """`pattern` (a paths.RECIPE_* file) for every run of the gamma sweep."""
    sweep = study(config, dataset, "gamma")
    return [pattern.format(dataset=dataset, variant=paths.gamma_variant(gamma), arch=arch, seed=seed)
            for gamma in sweep["values"] for arch in config["datasets"][dataset]["training"]["architectures"]
            for seed in sweep["seeds"]]


def study_generator(config: dict, dataset: str, name: str) -> str:
    """The generator a study reads: its own `generator`, or the training generator."""
    return study(config, dataset, name).get("generator") or config["datasets"][dataset]["training"]["generator"]


def sample_sizes(smallest: int, available: int, factor: float) -> list[int]:
    """The log grid smallest * factor^i of training-set sizes below `available`, without a point
    within a factor sqrt(factor) of it (that point is the whole set, `all`, added by the caller)."""
    if smallest < 1 or factor <= 1:
        raise SettingsError(f"sample complexity grid needs smallest >= 1 and factor > 1, got {smallest}, {factor}")
    sizes, size = [], float(smallest)
    while size * math.sqrt(factor) < available:
        sizes.append(int(round(size)))
        size *= factor
    return sizes


def sample_complexity_sizes(config: dict, dataset: str) -> list[str]:
    """Training-set sizes of the sample-complexity study: a log grid from `smallest` below the
    images available (the generator's images, the class subset's share of them, minus the held-out
    ones; the filter's discards are unknown before it runs, so the last point is `all`)."""
    ds = config["datasets"][dataset]
    block = study(config, dataset, "sample_complexity")
    n_images = ds["generators"][study_generator(config, dataset, "sample_complexity")]["n_images"]
    classes = block["classes"]
    num_classes = ds["source"].get("num_classes") or NUM_CLASSES.get(ds["source"]["kind"])
    share = len(classes) / num_classes if classes and num_classes else 1.0
    available = int(n_images * share) - block["n_heldout"]
    return [str(size) for size in sample_sizes(block["smallest"], available, block["factor"])] + [paths.ALL_IMAGES]


def sample_complexity_runs(config: dict, dataset: str) -> list[dict]:
    """Wildcards of every training run of the sample-complexity study."""
    block = study(config, dataset, "sample_complexity")
    return [{"dataset": dataset, "regime": regime, "size": size, "seed": seed} for regime in block["regimes"]
            for size in sample_complexity_sizes(config, dataset) for seed in block["seeds"]]


def sample_complexity_settings(config: dict, dataset: str, regime: str, size: str) -> dict:
    """Training on synthetic images alone: the training block with the study's arch and epochs
    (at least `min_steps` optimizer steps for small sets), standard training (natural) or PGD with
    the study's `attack_steps` (the paper's PGD-4) at the threat's eps (adversarial)."""
    ds = config["datasets"][dataset]
    block = study(config, dataset, "sample_complexity")
    settings = _run_settings(ds, paths.BASELINE)
    epochs = block.get("epochs") or ds["training"]["epochs"]
    if size != paths.ALL_IMAGES and block["min_steps"]:
        epochs = max(epochs, -(-block["min_steps"] * settings.get("batch_size", schema_defaults("training")["batch_size"])
                               // int(size)))
    threat = None
    if regime == "adversarial":
        threat = sample_complexity_threat(config, dataset)
    return canonical({**settings, "epochs": epochs, "model_selection": "last",
                      "arch": block.get("arch") or ds["training"]["architectures"][0], "threat": threat})


def sample_complexity_threat(config: dict, dataset: str) -> dict:
    """The study's threat: the named threat model with `attack_steps` PGD steps (step size rescaled)."""
    block = study(config, dataset, "sample_complexity")
    threat = dict(config["datasets"][dataset]["threats"][block["threat"]])
    steps = block["attack_steps"]
    threat.update(step_size=threat["step_size"] * threat["steps"] / steps, steps=steps)
    return canonical(threat)


def filter_study_thresholds(config: dict, dataset: str) -> list[str]:
    return [f"{float(t):g}" for t in study(config, dataset, "filter")["thresholds"]]


def filter_study_settings(config: dict, dataset: str) -> dict:
    """Transferred robustness (port.config.transfer_settings) with the study's epochs."""
    block = study(config, dataset, "filter")
    settings = transfer_settings(config, dataset)
    return canonical({**settings, "epochs": block.get("epochs") or settings["epochs"]})


def nonrobust_discriminator_settings(config: dict, dataset: str, arch: str) -> dict:
    """The discriminator at eps 0 (natural training) with another architecture (CNN-2, CNN-4)."""
    block = study(config, dataset, "nonrobust_discriminators")
    settings = discriminator_settings(config, dataset, 0.0)
    return canonical({**settings, "arch": arch, "epochs": block.get("epochs") or settings["epochs"]})


def study_targets(config: dict, datasets=None) -> list[str]:
    """Every study table and plot of the default datasets (or of `datasets`) that configure `studies`."""
    names = config.get("default_datasets", []) if datasets is None else datasets
    targets = []
    for name in names:
        if "studies" not in config["datasets"][name]:
            continue
        targets += [pattern.format(dataset=name) for pattern in (
            paths.GAMMA_STUDY_TABLE, paths.SAMPLE_COMPLEXITY_TABLE, paths.FILTER_STUDY_TABLE, paths.THEOREM1_TABLE)]
        if len(ranked_generators(config, name)) >= 2:
            targets.append(paths.NONROBUST_DISCRIMINATOR_TABLE.format(dataset=name))
    return targets
