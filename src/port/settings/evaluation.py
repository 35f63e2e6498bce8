"""The `evaluation` and `score_groups` blocks, and the record of what made a run."""

from __future__ import annotations

from .. import paths
from .schema import canonical
from .training import training_settings


def evaluation_settings(config: dict, dataset: str, method: str) -> dict:
    """The evaluation block; score-group runs may skip AutoAttack (their table reports PGD)."""
    ds = config["datasets"][dataset]
    settings = dict(ds["evaluation"])
    if paths.group_of(paths.selection_of(method)) is not None:
        settings["autoattack"] = ds["score_groups"]["autoattack"]
    return canonical(settings)


def score_group_methods(config: dict, dataset: str) -> list[str]:
    groups = config["datasets"][dataset]["score_groups"]
    return [paths.run_name(paths.group_selection(g)) for g in range(groups["n_groups"])]


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
