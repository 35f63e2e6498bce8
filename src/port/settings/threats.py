"""Threat models: the `threats` block and the PGD step-size rule every attack shares."""

from __future__ import annotations

from ..errors import ConfigError


def step_size(eps: float, steps: int, factor: float) -> float:
    """PGD's step for `steps` steps in an eps-ball: factor * eps / steps (factor 2.5, Madry et al.,
    lets the walk cross the ball and come back within the steps)."""
    return factor * eps / steps


def check_threats(config: dict, dataset: str) -> None:
    """An attack with a radius moves: its step is positive."""
    for name, threat in config["datasets"][dataset]["threats"].items():
        if threat["eps"] > 0 and threat["step_size"] == 0:
            raise ConfigError(f"datasets.{dataset}.threats.{name}.step_size: must be > 0 when eps > 0")
