"""What `snakemake` builds: the default targets, the studies' tables and the RobustBench exports."""

from __future__ import annotations

from .. import paths
from .discrimination import ranked_generators
from .generation import is_mixture, mixture_members
from .training import run_paths


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


def recipe_targets(config: dict) -> list[str]:
    return [paths.RECIPE_SUMMARY.format(dataset=name) for name, ds in config["datasets"].items() if "recipe_study" in ds]


def robustbench_targets(config: dict) -> list[str]:
    """The RobustBench export of every adversarial-training run of the default datasets."""
    return [path for name in config.get("default_datasets", []) for threat in config["datasets"][name]["threats"]
            for path in run_paths(config, name, threat, paths.ROBUSTBENCH_INFO)]


def audited_generators(config: dict, dataset: str) -> list[str]:
    """The generators whose audit the default target reports: the training generator and the ranked ones
    (the generators it samples anyway)."""
    ds = config["datasets"][dataset]
    training = ds["training"]["generator"]
    trained_on = mixture_members(config, dataset, training) if is_mixture(config, dataset, training) else [training]
    return list(dict.fromkeys([*trained_on, *ranked_generators(config, dataset)]))
