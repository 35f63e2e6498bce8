"""The config's cross-field checks, run by the Snakefile before any job: each block's own check
(in its module here), then the schedule of every trainer the config makes."""

from __future__ import annotations

from .. import paths
from ..errors import ConfigError
from .data import check_source
from .discrimination import check_discrimination, discriminator_settings, transfer_settings
from .generation import check_generators
from .smoothing import smoothing_settings
from .studies import (check_mixture_uses, check_recipe_study, filter_study_settings, recipe_settings,
                      sample_complexity_settings, variant)
from .threats import check_threats
from .training import check_schedule, check_training, training_settings

BLOCK_CHECKS = (check_source, check_generators, check_training, check_discrimination, check_mixture_uses,
                check_threats, check_recipe_study)


def check_config(config: dict) -> None:
    """Raise ConfigError naming the key when values contradict each other."""
    for name in config.get("default_datasets", []):
        if name not in config["datasets"]:
            raise ConfigError(f"default_datasets: '{name}' is not a key of datasets")
    for dataset in config["datasets"]:
        for check in BLOCK_CHECKS:
            check(config, dataset)
        for settings, key, epochs_key in trainer_schedules(config, dataset):  # after the threat names are checked
            check_schedule(settings, key, epochs_key)


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
