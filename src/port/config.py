"""Config helpers for the Snakefile: cross-field checks and the per-stage settings.

Each rule gets its stage's settings through `params:` as plain builtins with sorted keys,
so editing one value reruns exactly that stage and what depends on it, and reordering
keys in the YAML file reruns nothing.
"""

from __future__ import annotations

import functools
import math
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from . import paths
from .errors import ConfigError, SettingsError

TRAINING_RUN_KEYS = ("generator", "architectures", "seeds")
SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"  # the package is installed editable
# The config block whose settings (batch_size, ...) each training rule passes to the trainer
# (a recipe variant's block overrides the dataset's `training` block).
TRAINER_BLOCKS = {"train_robust": "training", "train_smooth": "training", "train_transfer": "training",
                  "train_discriminator": "discrimination", "train_scorer": "discrimination",
                  "train_nonrobust_discriminator": "discrimination",
                  "train_sample_complexity": "studies.sample_complexity", "train_filter_study": "studies.filter",
                  "train_scarcity_scorer": "discrimination", "train_scarcity": "training"}
# Defaults of generator keys that only one kind reads; kept out of the schema so that adding a
# kind does not change (and rerun) the other kinds' sampling settings.
KIND_DEFAULTS = {"stylegan": {"truncation_psi": 1.0, "noise_mode": "const", "class_labels": None}}
LABEL_SOURCES = ("generator", "lanet")
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}  # classes of the built-in dataset kinds
CONDITIONAL_KINDS = ("gan", "stylegan", "npz")  # kinds whose shards may carry the generator's labels
# What port.generators.import_npz_shard reads of an npz generator's block (plus num_classes).
NPZ_IMPORT_KEYS = ("kind", "path", "image_key", "label_key", "n_images", "n_shards")


def check_yaml_syntax(path) -> None:
    """A config file that is not YAML is named with its line and column: Snakemake's own message
    ("Config file is not valid JSON or YAML") names neither. A missing file is Snakemake's to report."""
    import yaml

    if not Path(path).is_file():
        return
    try:
        yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as err:
        mark, context = err.problem_mark, err.context_mark
        started = f" ({err.context} from line {context.line + 1})" if err.context and context else ""
        raise ConfigError(f"{path}: line {mark.line + 1}, column {mark.column + 1}: not valid YAML: "
                          f"{err.problem}{started}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None


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
    for ds_name, ds in config["datasets"].items():
        where = f"datasets.{ds_name}"
        source = ds["source"]
        if source["kind"] == "npz" and not (source.get("train") and source.get("test")):
            raise ConfigError(f"{where}.source: kind npz needs `train` and `test` npz paths")
        if source["kind"] in ("cifar10", "cifar100") and not (source.get("root") or source.get("download")):
            raise ConfigError(f"{where}.source: kind {source['kind']} needs `root` (or `download: true`)")
        if source.get("url") and not source.get("download"):
            raise ConfigError(f"{where}.source.url: read only with `download: true`")
        for gen_name, gen in ds["generators"].items():
            at = f"{where}.generators.{gen_name}"
            if gen["kind"] == "mixture":
                _check_mixture(ds, gen_name, gen, at)
                continue
            if re.fullmatch(paths.NAME, gen_name) is None:
                raise ConfigError(f"{at}: only a kind mixture may have '+' in its name (its files are named by it)")
            if "of" in gen or "weights" in gen:
                raise ConfigError(f"{at}: `of` and `weights` only apply to kind mixture")
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
            # a local save_pretrained DDPM: its classes are read from its UNet config before any job (port.inputs)
            local_ddpm = gen["kind"] == "diffusers" and generator_files(config, ds_name, gen_name)
            if gen.get("labels_from") == "generator" and not (gen["kind"] in CONDITIONAL_KINDS or conditional_ddpm
                                                               or local_ddpm):
                raise ConfigError(f"{at}: labels_from generator needs a generator that records labels (kinds "
                                  f"{', '.join(CONDITIONAL_KINDS)}, a class_conditional diffusion_models entry, "
                                  f"or a local save_pretrained directory)")
            if gen.get("labels_from") == "generator" and gen.get("guidance_scale") == 0:
                # the guided noise is the unconditional model's alone: image i is no image of class i mod C
                raise ConfigError(f"{at}.guidance_scale: 0 samples without the class, so labels_from generator "
                                  f"would label images with classes they were not drawn from")
        for model_name, model in ds.get("diffusion_models", {}).items():
            levels = model.get("attention_levels", [])
            if any(level >= len(model["block_out_channels"]) for level in levels):
                raise ConfigError(f"{where}.diffusion_models.{model_name}.attention_levels: "
                                  f"levels must be below {len(model['block_out_channels'])}")
        if ds["training"]["generator"] not in ds["generators"]:
            raise ConfigError(f"{where}.training.generator: '{ds['training']['generator']}' "
                              f"is not a key of {where}.generators")
        for generator in ds["generator_ranking"]["generators"]:
            if generator not in ds["generators"]:
                raise ConfigError(f"{where}.generator_ranking.generators: '{generator}' is not a key of {where}.generators")
            if is_mixture(config, ds_name, generator):
                raise ConfigError(f"{where}.generator_ranking.generators: '{generator}' is a mixture: it has no images of "
                                  f"its own to discriminate (rank its members)")
        _check_mixture_uses(config, ds_name)
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
        for settings, key, epochs_key in trainer_schedules(config, ds_name):  # after the threat names are checked
            _check_schedule(settings, key, epochs_key)


def trainer_schedules(config: dict, dataset: str):
    """(trainer settings, key of its warm-ups, key of its epochs) for every trainer the dataset
    configures: robust training, smoothing, transfer (generator ranking, filter study), the
    discriminators, the recipe and gamma variants and the sample-complexity study."""
    ds, where = config["datasets"][dataset], f"datasets.{dataset}"
    threat, arch = next(iter(ds["threats"])), ds["training"]["architectures"][0]
    yield training_settings(config, dataset, threat, arch), f"{where}.training", f"{where}.training.epochs"
    if "smoothing" in ds:
        epochs_key = f"{where}.smoothing.epochs" if "epochs" in ds["smoothing"] else f"{where}.training.epochs"
        yield smoothing_settings(config, dataset, arch), f"{where}.training", epochs_key
    yield transfer_settings(config, dataset), f"{where}.training", f"{where}.generator_ranking.epochs"
    yield discriminator_settings(config, dataset, max(ds["discrimination"]["eps"])), f"{where}.discrimination", \
        f"{where}.discrimination.epochs"
    for name in ds.get("recipe_study", {}).get("variants", {}):
        key = variant(config, dataset, name)["key"]
        yield recipe_settings(config, dataset, name, arch), key, f"{key}.epochs"
    studies = ds.get("studies", {})
    for name in ("gamma", "sample_complexity"):
        if studies.get(name, {}).get("threat", next(iter(ds["threats"]))) not in ds["threats"]:
            raise ConfigError(f"{where}.studies.{name}.threat: '{studies[name]['threat']}' is not a key of "
                              f"{where}.threats")
    if "gamma" in studies:
        name = paths.gamma_variant(studies["gamma"]["values"][0])
        yield recipe_settings(config, dataset, name, arch), f"{where}.studies.gamma.training", \
            f"{where}.studies.gamma.training.epochs"
    if "filter" in studies:
        yield filter_study_settings(config, dataset), f"{where}.training", f"{where}.studies.filter.epochs"
    if "sample_complexity" in studies:  # the full set: the fewest epochs (min_steps adds some to small sets)
        yield sample_complexity_settings(config, dataset, "adversarial", paths.ALL_IMAGES), f"{where}.training", \
            f"{where}.studies.sample_complexity.epochs"


def _check_schedule(settings: dict, key: str, epochs_key: str) -> None:
    """A warm-up must end before the last epoch: otherwise the learning rate or the attack's eps
    never reach their configured values, while the tables report the configured eps."""
    ramps = [("warmup_epochs", "learning rate")] + ([("eps_warmup_epochs", "eps")] if settings.get("threat") else [])
    for name, what in ramps:
        if settings.get(name, 0) >= settings["epochs"]:
            raise ConfigError(f"{key}.{name}: {settings[name]} leaves no epoch at the full {what} out of the "
                              f"{settings['epochs']} epochs ({epochs_key})")


def _check_mixture(ds: dict, name: str, gen: dict, at: str) -> None:
    """A mixture names two or more generators that sample images (no mixture of mixtures), with
    fractions summing to 1, or `weights: arc` and its members listed."""
    members = gen.get("of")
    if not members or len(members) < 2:
        raise ConfigError(f"{at}: kind mixture needs `of`, two or more generators")
    for member in members:
        if member not in ds["generators"]:
            raise ConfigError(f"{at}.of: '{member}' is not a key of generators")
        if ds["generators"][member]["kind"] == "mixture":
            raise ConfigError(f"{at}.of: '{member}' is a mixture itself; list its members instead")
    extra = sorted(set(gen) - {"kind", "of", "weights"} - set(schema_defaults("generator")))  # the schema fills those
    if extra:
        raise ConfigError(f"{at}: {', '.join(extra)} do not apply to kind mixture (it samples nothing)")
    if gen.get("weights") == "arc":
        if isinstance(members, dict):
            raise ConfigError(f"{at}: with `weights: arc` list the members (`of: [a, b]`); ARC gives the fractions")
        missing = [m for m in members if m not in ds["generator_ranking"]["generators"]]
        if missing:
            raise ConfigError(f"{at}: weights arc needs each member's ARC; add {missing} to "
                              f"generator_ranking.generators")
    elif not isinstance(members, dict):
        raise ConfigError(f"{at}.of: give each member's fraction of the selected images ({{a: 0.6, b: 0.4}}) "
                          f"or set `weights: arc`")
    elif not math.isclose(sum(members.values()), 1.0, abs_tol=1e-6):
        raise ConfigError(f"{at}.of: fractions sum to {sum(members.values()):g}, not 1")


def _check_mixture_uses(config: dict, dataset: str) -> None:
    """A mixture trains (its selections split k), but it has no images, labels, scores or
    discriminators of its own: refuse the stages that would need them."""
    ds, where = config["datasets"][dataset], f"datasets.{dataset}"
    training = ds["training"]["generator"]
    if is_mixture(config, dataset, training):
        uses = {"selection.methods": ds["selection"]["methods"]}
        if "recipe_study" in ds:
            uses["recipe_study.selection"] = [ds["recipe_study"]["selection"]]
        if "gamma" in ds.get("studies", {}):
            uses["studies.gamma.selection"] = [ds["studies"]["gamma"]["selection"]]
        for key, methods in uses.items():
            other = [m for m in methods if m not in paths.MIXTURE_SELECTIONS]
            if other:
                raise ConfigError(f"{where}.{key}: {other} on mixture '{training}' (training.generator); a mixture "
                                  f"splits k and takes {', '.join(paths.MIXTURE_SELECTIONS)}")
        if ds["selection"]["k"] is None:
            raise ConfigError(f"{where}.selection.k: mixture '{training}' (training.generator) needs a k to split")
        if ds["score_groups"]["enabled"]:
            raise ConfigError(f"{where}.score_groups.enabled: score groups sort one generator's scores; mixture "
                              f"'{training}' (training.generator) has one scale per member. Disable them or train "
                              f"on one generator")
    for study_name in ("sample_complexity", "filter"):
        generator = study_generator(config, dataset, study_name) if study_name in ds.get("studies", {}) else None
        if generator in ds["generators"] and is_mixture(config, dataset, generator):
            raise ConfigError(f"{where}.studies.{study_name}.generator: '{generator}' is a mixture; the study reads "
                              f"one generator's images (set its `generator`)")
    block = ds.get("studies", {}).get("mixture")
    if block is not None:
        if block["mixture"] not in ds["generators"] or not is_mixture(config, dataset, block["mixture"]):
            raise ConfigError(f"{where}.studies.mixture.mixture: '{block['mixture']}' is not a kind mixture generator")
        if block["threat"] not in ds["threats"]:
            raise ConfigError(f"{where}.studies.mixture.threat: '{block['threat']}' is not a key of {where}.threats")
        if ds["selection"]["k"] is None:
            raise ConfigError(f"{where}.selection.k: the mixture study needs a k to split")


def is_mixture(config: dict, dataset: str, generator: str) -> bool:
    return config["datasets"][dataset]["generators"][generator]["kind"] == "mixture"


def mixture_members(config: dict, dataset: str, mixture: str) -> list[str]:
    return list(config["datasets"][dataset]["generators"][mixture]["of"])


def mixture_fractions(config: dict, dataset: str, mixture: str) -> dict | None:
    """Each member's fraction of the selected images; None under `weights: arc` (from ARC at run time)."""
    gen = config["datasets"][dataset]["generators"][mixture]
    return None if gen.get("weights") == "arc" else canonical(dict(gen["of"]))


def selected_path(config: dict, dataset: str, generator: str, selection: str) -> str:
    """The selected images of a generator, or of a mixture (its members' images merged)."""
    if is_mixture(config, dataset, generator):
        return paths.MIXTURE_SELECTED.format(dataset=dataset, mixture=generator, selection=selection)
    return paths.SELECTED.format(dataset=dataset, generator=generator, selection=selection)


def _check_trades(training: dict, where: str) -> None:
    """TRADES crafts its attack with BatchNorm frozen (Wang et al. 2023), so it asks for it explicitly."""
    if training.get("loss") == "trades" and training.get("attack_batchnorm") != "eval":
        raise ConfigError(f"{where}.attack_batchnorm: loss trades crafts its attack with BatchNorm frozen, "
                          f"set attack_batchnorm: eval")


def real_set_batches(config: dict, dataset: str) -> list[tuple[str, int]]:
    """(config key, batch_size) of every trainer that trains on the real training set: the
    training block's (robust training, smoothing, the recipe variants) and the gamma and mixture
    studies' own. All hold out the training block's val_fraction."""
    ds, where = config["datasets"][dataset], f"datasets.{dataset}"
    studies = ds.get("studies", {})
    return [(f"{where}.training", ds["training"]["batch_size"])] + [
        (f"{where}.studies.{name}.training", studies[name]["training"]["batch_size"])
        for name in ("gamma", "mixture") if "batch_size" in studies.get(name, {}).get("training", {})]


def validation_count(n: int, fraction: float) -> int:
    """How many of `n` real training images a trainer holds out for validation (at least one)."""
    return max(1, int(round(n * fraction)))


def pipeline_model_pattern(config: dict, dataset: str, generator: str) -> str | None:
    """The paths pattern (`{dataset}` left open) of the model a generator samples from when the
    pipeline trains it (a DDPM directory or a GAN checkpoint); None for hub ids, outside
    directories and npz sets."""
    ds = config["datasets"][dataset]
    gen = ds["generators"][generator]
    model = gen.get("model")
    if gen["kind"] == "diffusers" and model in ds.get("diffusion_models", {}):
        return paths.fill(paths.DIFFUSION_MODEL, model=model)
    if gen["kind"] == "gan":
        return paths.fill(paths.GAN_MODEL, model=model)
    return None


def pipeline_model(config: dict, dataset: str, generator: str) -> str | None:
    """pipeline_model_pattern's path for the dataset."""
    pattern = pipeline_model_pattern(config, dataset, generator)
    return None if pattern is None else pattern.format(dataset=dataset)


def source_files(config: dict, dataset: str) -> dict[str, str]:
    """The npz files a dataset is read from ({} for built-in datasets), by split."""
    source = config["datasets"][dataset]["source"]
    return {split: source[split] for split in ("train", "test")} if source["kind"] == "npz" else {}


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")  # `google/ddpm-cifar10-32`: one slash at most


def is_url(model: str) -> bool:
    return urlparse(str(model)).scheme in ("http", "https")


def remote_model(config: dict, dataset: str, generator: str) -> str | None:
    """The hub id (kind diffusers) or URL (kind stylegan) a generator's model is fetched from by
    the local rule fetch_model; None for a model on disk, a pipeline-trained one, or npz sets."""
    gen = config["datasets"][dataset]["generators"][generator]
    model = gen.get("model")
    if not model or pipeline_model(config, dataset, generator) is not None or os.path.exists(model):
        return None
    if gen["kind"] == "stylegan" and is_url(model):
        return model
    if gen["kind"] == "diffusers" and HUB_ID.fullmatch(model):
        return model
    return None


def fetched_source(folder: str, model: str) -> str:
    """What a shard reads from a fetched folder: a URL's network pickle, or the hub snapshot itself."""
    return f"{folder}/network.pkl" if is_url(model) else folder


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
    labelling choice (labels_from reaches the pseudo-label stage, not the sampler). An imported
    npz set gets only what its import reads: a sampler's keys (batch_size, steps, ...) cannot
    change its images, so editing them reruns nothing."""
    ds = config["datasets"][dataset]
    gen = ds["generators"][generator]
    settings = {**KIND_DEFAULTS.get(gen["kind"], {}), **gen}
    settings.pop("labels_from", None)
    if gen["kind"] == "npz":  # imported labels are checked against the dataset's classes
        settings = {key: value for key, value in settings.items() if key in NPZ_IMPORT_KEYS}
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


def synthetic_batch_size(real_batch: int, synthetic_fraction: float) -> int:
    """Generated images per batch so that they make `synthetic_fraction` of it next to
    `real_batch` real ones: real * f / (1 - f), rounded (0.5 gives PORT's 1:1)."""
    count = round(real_batch * synthetic_fraction / (1.0 - synthetic_fraction))
    if count < 1:
        raise ValueError(f"synthetic_fraction {synthetic_fraction} leaves no synthetic image next to "
                         f"{real_batch} real ones")
    return count


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
        block = ds["generators"][generator]
        if block["kind"] == "mixture":  # its members and fractions (or weights arc), not the schema's sampler defaults
            block = {key: block[key] for key in ("kind", "of", "weights") if key in block}
        record.update(generator={"name": generator, **block},
                      selection={"method": selection, **ds["selection"]}, filter=ds["filter"], audit=ds["audit"])
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
    chosen = variant(config, dataset, name)
    if not chosen["synthetic"]:
        return []
    return selected_path(config, dataset, chosen["generator"], chosen["selection"])


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
    # only the mixture study's variants name their generator: the others' rows (and params) stay as they were
    generator = {"generator": chosen["generator"]} if paths.generator_of_variant(name) else {}
    return {"variant": name, "architecture": arch, "seed": seed, **generator,
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


def audited_generators(config: dict, dataset: str) -> list[str]:
    """The generators whose audit the default target reports: the training generator and the ranked ones
    (the generators it samples anyway)."""
    ds = config["datasets"][dataset]
    training = ds["training"]["generator"]
    trained_on = mixture_members(config, dataset, training) if is_mixture(config, dataset, training) else [training]
    return list(dict.fromkeys([*trained_on, *ranked_generators(config, dataset)]))


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
        training = ds["training"]["generator"]
        shown = mixture_members(config, name, training) if is_mixture(config, name, training) else [training]
        targets += [paths.SAMPLES_PER_CLASS.format(dataset=name, generator=generator) for generator in shown]
        targets += [pattern.format(dataset=name, generator=generator) for generator in audited_generators(config, name)
                    for pattern in (paths.AUDIT_TABLE, paths.AUDIT_PLOT)]
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


# ---- the data-scarcity study (rules/scarcity.smk) ------------------------------------------
def scarcity_sizes(config: dict, dataset: str) -> list[str]:
    """The study's n_real values as wildcards: each cut's size, then `all` (the whole training set)."""
    block = study(config, dataset, "data_scarcity")
    return [str(n) for n in block["sizes"]] + ([paths.ALL_IMAGES] if block["all"] else [])


def scarcity_runs(config: dict, dataset: str) -> list[dict]:
    """Wildcards of every run of the study: each n_real, the baseline and PORT on each selection,
    each training architecture and seed, at the study's threat."""
    block = study(config, dataset, "data_scarcity")
    if block["threat"] not in config["datasets"][dataset]["threats"]:
        raise ConfigError(f"datasets.{dataset}.studies.data_scarcity.threat: '{block['threat']}' is not a key of "
                          f"datasets.{dataset}.threats")
    return [{"dataset": dataset, "n_real": n_real, "threat": block["threat"], "method": method, "arch": arch,
             "seed": seed} for n_real in scarcity_sizes(config, dataset)
            for method, arch, seed in training_runs(config, dataset, seeds=block["seeds"])]


def scarcity_file(pattern: str, **values) -> str:
    """What a run of cut `values["n_real"]` reads for `pattern` (a path of the dataset's layout):
    the cut's own file, or for `all` the dataset's (the default run's training set, generator,
    labelers and selections: trained on all of it)."""
    return (pattern if values["n_real"] == paths.ALL_IMAGES else paths.scarce(pattern)).format(**values)


def scarcity_generator_model(config: dict, dataset: str, n_real: str) -> str:
    """The training generator's model trained on cut n_real; ConfigError when the pipeline does not
    train that generator (a hub id or an imported set cannot be retrained on a cut)."""
    generator = config["datasets"][dataset]["training"]["generator"]
    pattern = pipeline_model_pattern(config, dataset, generator)
    if pattern is None:
        raise ConfigError(f"datasets.{dataset}.studies.data_scarcity: the training generator '{generator}' is not "
                          f"trained by the pipeline (a diffusion_models or gan_models entry), so no cut can train it")
    return scarcity_file(pattern, dataset=dataset, n_real=n_real)


def scarcity_training_settings(config: dict, dataset: str, threat: str, method: str, arch: str) -> dict:
    """A run of the study: the training block at `threat`, `steps` optimizer steps at any n_real
    (epochs 1, raised by min_steps to whole epochs), and the last weights: model selection on a
    validation split of ten images (at n_real 100) would pick an epoch by noise."""
    ds = config["datasets"][dataset]
    return canonical({**_run_settings(ds, method), "arch": arch, "epochs": 1, "model_selection": "last",
                      "min_steps": study(config, dataset, "data_scarcity")["steps"], "threat": ds["threats"][threat]})


def scarcity_labeler_settings(config: dict, dataset: str, slot: str) -> dict:
    """A cut's labeler: the dataset's, for at least the study's min_steps optimizer steps."""
    if labeler_checkpoint(config, dataset, slot):
        raise ConfigError(f"datasets.{dataset}.labelers.{slot}.checkpoint: a given labeler was not trained on a "
                          f"cut; the data-scarcity study trains its labelers")
    return canonical({**labeler_settings(config, dataset, slot),
                      "min_steps": study(config, dataset, "data_scarcity")["min_steps"]})


def scarcity_scorer_settings(config: dict, dataset: str) -> dict:
    """A cut's scorer (the adaptive selection's discriminator): the dataset's, for at least min_steps steps."""
    eps = config["datasets"][dataset]["scores"]["discriminator_eps"]
    return canonical({**discriminator_settings(config, dataset, eps),
                      "min_steps": study(config, dataset, "data_scarcity")["min_steps"]})


def scarcity_row(method: str, arch: str, seed: int, n_real: str) -> dict:
    """A run's identity columns and its cut (`all` or the cut's size: the n_real wildcard)."""
    return {**run_row(method, arch, seed), "cut": n_real}


# ---- the paper's studies (rules/studies.smk) -------------------------------------------------
def study(config: dict, dataset: str, name: str) -> dict:
    """One block of the dataset's `studies` (schema defaults filled)."""
    studies = config["datasets"][dataset].get("studies")
    if studies is None:
        raise ConfigError(f"datasets.{dataset}.studies: no studies configured for dataset '{dataset}'")
    return studies[name]


def variant(config: dict, dataset: str, name: str) -> dict:
    """A training variant: a recipe_study variant, a gamma-sweep run (`gamma-<value>`) or a mixture
    study run (`on-<generator>`); what it overrides in the training block (`training`), whether it
    trains on synthetic images, of which generator, its threat model, selection, evaluation
    overrides and config key (for error messages)."""
    ds = config["datasets"][dataset]
    if name in ds.get("recipe_study", {}).get("variants", {}):
        study_block = ds["recipe_study"]
        block = study_block["variants"][name]
        return {"training": block.get("training", {}), "synthetic": block.get("synthetic", True),
                "generator": ds["training"]["generator"], "threat": study_block["threat"],
                "selection": study_block["selection"], "evaluation": {},
                "key": f"datasets.{dataset}.recipe_study.variants.{name}.training"}
    generator = paths.generator_of_variant(name)
    if generator is not None and generator in mixture_study_generators(config, dataset):
        block = ds["studies"]["mixture"]
        return {"training": block["training"], "synthetic": True, "generator": generator, "threat": block["threat"],
                "selection": block["selection"], "evaluation": {"autoattack": block["autoattack"]},
                "key": f"datasets.{dataset}.studies.mixture"}
    gamma = paths.gamma_of(name)
    sweep = ds.get("studies", {}).get("gamma")
    if gamma is None or sweep is None or gamma not in [float(v) for v in sweep["values"]]:
        raise ConfigError(f"training variant '{name}': neither a key of datasets.{dataset}.recipe_study.variants nor "
                          f"gamma-<v> for a v in datasets.{dataset}.studies.gamma.values nor on-<g> for g the "
                          f"mixture of datasets.{dataset}.studies.mixture or one of its members")
    return {"training": {**sweep["training"], "gamma": gamma}, "synthetic": True,
            "generator": ds["training"]["generator"], "threat": sweep["threat"],
            "selection": sweep["selection"], "evaluation": {"autoattack": sweep["autoattack"]},
            "key": f"datasets.{dataset}.studies.gamma"}


def mixture_study_generators(config: dict, dataset: str) -> list[str]:
    """What the mixture study trains on, one generator at a time: each member, then the mixture."""
    block = config["datasets"][dataset].get("studies", {}).get("mixture")
    return [] if block is None else [*mixture_members(config, dataset, block["mixture"]), block["mixture"]]


def mixture_study_runs(config: dict, dataset: str, pattern: str) -> list[str]:
    """`pattern` (a paths.RECIPE_* file) for every run of the mixture study."""
    block = study(config, dataset, "mixture")
    return [pattern.format(dataset=dataset, variant=paths.mixture_variant(generator), arch=arch, seed=seed)
            for generator in mixture_study_generators(config, dataset)
            for arch in config["datasets"][dataset]["training"]["architectures"] for seed in block["seeds"]]


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
        if "mixture" in config["datasets"][name]["studies"]:
            targets.append(paths.MIXTURE_STUDY_TABLE.format(dataset=name))
    return targets
