"""The `recipe_study` and `studies` blocks: training variants (recipe, gamma sweep, mixture
study) and the paper's studies (sample complexity, filter, non-robust discriminators)."""

from __future__ import annotations

import math

from .. import paths
from ..errors import ConfigError, SettingsError
from .data import num_classes
from .discrimination import discriminator_settings, transfer_settings
from .generation import is_mixture, mixture_members, selected_path
from .schema import canonical
from .training import check_trades, run_settings


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
    return canonical({**run_settings(ds, method), **chosen["training"], "arch": arch,
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
    classes_in_all = num_classes(config, dataset)
    share = len(classes) / classes_in_all if classes and classes_in_all else 1.0
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
    settings = run_settings(ds, paths.BASELINE)
    epochs = block.get("epochs") or ds["training"]["epochs"]
    if size != paths.ALL_IMAGES and block["min_steps"]:
        epochs = max(epochs, -(-block["min_steps"] * settings["batch_size"] // int(size)))
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
    """Transferred robustness (port.settings.discrimination.transfer_settings) with the study's epochs."""
    block = study(config, dataset, "filter")
    settings = transfer_settings(config, dataset)
    return canonical({**settings, "epochs": block.get("epochs") or settings["epochs"]})


def nonrobust_discriminator_settings(config: dict, dataset: str, arch: str) -> dict:
    """The discriminator at eps 0 (natural training) with another architecture (CNN-2, CNN-4)."""
    block = study(config, dataset, "nonrobust_discriminators")
    settings = discriminator_settings(config, dataset, 0.0)
    return canonical({**settings, "arch": arch, "epochs": block.get("epochs") or settings["epochs"]})


def check_mixture_uses(config: dict, dataset: str) -> None:
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


def check_recipe_study(config: dict, dataset: str) -> None:
    """The recipe study's threat exists and its TRADES variants freeze BatchNorm."""
    ds, where = config["datasets"][dataset], f"datasets.{dataset}"
    if "recipe_study" not in ds:
        return
    block = ds["recipe_study"]
    if block["threat"] not in ds["threats"]:
        raise ConfigError(f"{where}.recipe_study.threat: '{block['threat']}' is not a key of {where}.threats")
    for name, overrides in block["variants"].items():
        check_trades({**ds["training"], **overrides.get("training", {})}, f"{where}.recipe_study.variants.{name}")
