"""Projected gradient descent (Madry et al. 2018) in pixel space, for linf and l2 balls."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .compute import Compute, channels_last

NORMS = ("linf", "l2")


@contextlib.contextmanager
def batchnorm_mode(model: nn.Module, mode: str):
    """Run BatchNorm layers in `mode` ('train' or 'eval') inside the block, then restore.

    The official PORT code crafts attacks with BatchNorm in train mode; Wang et al. (2023)
    use eval mode. The rest of the model keeps its current mode.
    """
    if mode not in ("train", "eval"):
        raise ValueError(f"batchnorm mode must be 'train' or 'eval', got {mode!r}")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    previous = [m.training for m in norms]
    for m in norms:
        m.train(mode == "train")
    try:
        yield
    finally:
        for m, was_training in zip(norms, previous):
            m.train(was_training)


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _flat_norm(delta)).clamp(max=1.0)


def random_start(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None = None):
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * eps
    else:
        direction = torch.randn(x.shape, generator=generator, device=x.device)
        radius = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), generator=generator, device=x.device)
        delta = direction / _flat_norm(direction) * radius * eps
    return (x + delta).clamp(0, 1) - x


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, step_size: float,
        steps: int, random_init: bool = True, loss_fn=F.cross_entropy, start: torch.Tensor | None = None,
        compute: Compute | None = None) -> torch.Tensor:
    """Maximise `loss_fn(model(x'), y)` over x' in the eps-ball around x, inside [0, 1].

    `start` is the initial perturbation, when the caller draws it (training draws it for the
    whole global batch and slices, so each process's share matches a single process's).
    `compute` runs the forward and backward passes in bf16 on CUDA (None: fp32, as evaluation
    needs); the perturbation itself stays fp32. One autocast region spans the loop, so the
    weights are cast to bf16 once per attack, not once per step (autocast caches casts until
    its outermost region ends; backward passes run in their forward's dtypes either way).
    Nothing in the loop waits for the host.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if eps < 0 or step_size < 0 or steps < 0:
        raise ValueError(f"eps, step size and steps must be non-negative (got {eps}, {step_size}, {steps})")
    x = channels_last(x.detach())
    autocast = (compute or Compute("fp32")).autocast(x.device)
    if start is None:
        start = random_start(x, norm, eps) if random_init else torch.zeros_like(x)
    delta = start.detach()  # a new leaf: the caller's tensor keeps requires_grad off
    with autocast:
        for _ in range(steps):
            delta.requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(model(x + delta), y), delta)
            with torch.no_grad():
                step = grad.sign() if norm == "linf" else grad / _flat_norm(grad)
                delta = project(delta + step_size * step, norm, eps)
                delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


@dataclass
class Attack:
    """A threat model's PGD settings, callable on (model, x, y); `steps` overrides for cheap checks.
    `compute` is how training crafts its attacks (None: fp32, for evaluation)."""
    norm: str
    eps: float
    step_size: float
    steps: int
    compute: Compute | None = None

    @classmethod
    def from_settings(cls, threat: dict | None, compute: Compute | None = None) -> "Attack | None":
        if not threat:
            return None
        return cls(threat["norm"], float(threat["eps"]), float(threat["step_size"]), int(threat["steps"]), compute)

    def scaled(self, fraction: float) -> "Attack":
        """The same attack with eps and step size times `fraction` (at most 1): an eps warm-up."""
        fraction = min(max(fraction, 0.0), 1.0)
        return replace(self, eps=self.eps * fraction, step_size=self.step_size * fraction)

    def __call__(self, model, x, y, steps: int | None = None, start: torch.Tensor | None = None):
        return pgd(model, x, y, self.norm, self.eps, self.step_size, self.steps if steps is None else steps,
                   start=start, compute=self.compute)
