"""The `source` block (where a dataset's images come from) and the `compute` block every GPU stage takes."""

from __future__ import annotations

from ..errors import ConfigError
from .schema import canonical

NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}  # classes of the built-in dataset kinds


def check_source(config: dict, dataset: str) -> None:
    """A source names the files its kind reads."""
    source, where = config["datasets"][dataset]["source"], f"datasets.{dataset}.source"
    if source["kind"] == "npz" and not (source.get("train") and source.get("test")):
        raise ConfigError(f"{where}: kind npz needs `train` and `test` npz paths")
    if source["kind"] in ("cifar10", "cifar100") and not (source.get("root") or source.get("download")):
        raise ConfigError(f"{where}: kind {source['kind']} needs `root` (or `download: true`)")
    if source.get("url") and not source.get("download"):
        raise ConfigError(f"{where}.url: read only with `download: true`")


def num_classes(config: dict, dataset: str) -> int | None:
    """The dataset's classes as the config states them (`source.num_classes`, or the built-in
    kind's); None for an npz source that leaves them to its labels."""
    source = config["datasets"][dataset]["source"]
    return source.get("num_classes") or NUM_CLASSES.get(source["kind"])


def source_files(config: dict, dataset: str) -> dict[str, str]:
    """The npz files a dataset is read from ({} for built-in datasets), by split."""
    source = config["datasets"][dataset]["source"]
    return {split: source[split] for split in ("train", "test")} if source["kind"] == "npz" else {}


def compute_settings(config: dict, dataset: str) -> dict:
    """The dataset's `compute` block (precision, compile): part of every GPU stage's settings."""
    return canonical(config["datasets"][dataset].get("compute", {}))


def validation_count(n: int, fraction: float) -> int:
    """How many of `n` real training images a trainer holds out for validation (at least one)."""
    return max(1, int(round(n * fraction)))
