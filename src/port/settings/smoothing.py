"""The `smoothing` block: stability training and Cohen et al.'s certification."""

from __future__ import annotations

from .data import compute_settings
from .schema import canonical
from .training import run_methods, run_settings


def smoothing_epochs(config: dict, dataset: str) -> int:
    ds = config["datasets"][dataset]
    return ds["smoothing"].get("epochs", ds["training"]["epochs"])


def smoothing_settings(config: dict, dataset: str, arch: str, method: str = "port") -> dict:
    """The trainer's settings for stability training: the training block with the noise model."""
    ds = config["datasets"][dataset]
    smoothing = ds["smoothing"]
    settings = run_settings(ds, method)
    settings["epochs"] = smoothing_epochs(config, dataset)
    return canonical({**settings, "arch": arch, "threat": None,
                      "smoothing": {"sigma": smoothing["sigma"], "beta": smoothing["beta"]}})


def certify_settings(config: dict, dataset: str) -> dict:
    smoothing = config["datasets"][dataset]["smoothing"]
    return canonical({**smoothing["certify"], "sigma": smoothing["sigma"],
                      "compute": compute_settings(config, dataset)})


def smoothing_runs(config: dict, dataset: str) -> list[tuple[str, str, int]]:
    """(method, arch, seed) of every randomized-smoothing run: baseline and PORT on the first selection."""
    ds = config["datasets"][dataset]
    archs = ds["smoothing"].get("architectures", ds["training"]["architectures"])
    methods = run_methods(config, dataset)[:2]
    return [(method, arch, seed) for method in methods for arch in archs for seed in ds["training"]["seeds"]]
