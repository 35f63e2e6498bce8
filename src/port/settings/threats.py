"""Threat models: the `threats` block and the PGD step-size rule every attack shares."""

from __future__ import annotations


def step_size(eps: float, steps: int, factor: float) -> float:
    """PGD's step for `steps` steps in an eps-ball: factor * eps / steps (factor 2.5, Madry et al.,
    lets the walk cross the ball and come back within the steps)."""
    return factor * eps / steps
