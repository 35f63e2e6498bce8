"""The `labelers` block (lanet, splitnet) and where a generator's labels come from."""

from __future__ import annotations

from .data import compute_settings
from .schema import canonical


LABEL_SOURCES = ("generator", "lanet")


def labeler_checkpoint(config: dict, dataset: str, slot: str) -> str | None:
    """The trained model a labeler slot takes instead of training (None: the pipeline trains it)."""
    return config["datasets"][dataset]["labelers"][slot].get("checkpoint")


def labels_from(config: dict, dataset: str, generator: str) -> str:
    """Where a generator's pseudo-labels come from: its own classes or lanet (the default)."""
    return config["datasets"][dataset]["generators"][generator].get("labels_from", "lanet")


def labeler_settings(config: dict, dataset: str, slot: str) -> dict:
    return canonical({**config["datasets"][dataset]["labelers"][slot],
                      "compute": compute_settings(config, dataset)})
