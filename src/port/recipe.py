"""Training-recipe options beyond PORT's: the generated-data recipe of Wang et al. (2023,
"Better Diffusion Models Further Improve Adversarial Training", DM-Improves-AT) as building
blocks for the PORT trainer. Every option defaults to PORT's own behaviour.

- TRADES (Zhang et al. 2019): CE(f(x), y) + beta * KL(f(x) || f(x_adv)), the attack maximising
  the KL from a small Gaussian start, crafted with BatchNorm frozen (Wang et al.'s code).
- Weight averaging (EMA) with the warm-up decay min(decay, (1 + t) / (10 + t)) (Wang et al.,
  after Gowal et al. 2021); BatchNorm buffers are copied from the live model.
- Label smoothing (Szegedy et al. 2016) on the cross-entropy term.
- The share of generated images per batch (Wang et al.'s `unsup_fraction`).
- No weight decay on BatchNorm and bias parameters, and a linear learning-rate warm-up.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import pgd

# TRADES starts its attack at x + 0.001 * N(0, I) (Zhang et al.'s and Wang et al.'s code).
TRADES_START_STD = 1e-3


def kl_per_sample(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) || softmax(q)) for each row."""
    log_p = F.log_softmax(logits_p, 1)
    return (log_p.exp() * (log_p - F.log_softmax(logits_q, 1))).sum(1)


def ce_plus_kl(logits: torch.Tensor, other_logits: torch.Tensor, y: torch.Tensor, beta: float,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-image CE(f(x), y) + beta * KL(f(x) || f(x')): TRADES with x' adversarial, stability
    training with x' noisy. Label smoothing applies to the clean cross-entropy term only."""
    ce = F.cross_entropy(logits, y, reduction="none", label_smoothing=label_smoothing)
    return ce + beta * kl_per_sample(logits, other_logits)


def trades_start(x: torch.Tensor) -> torch.Tensor:
    """TRADES's initial perturbation, drawn like every other training randomness for the whole batch."""
    return TRADES_START_STD * torch.randn_like(x)


def trades_attack(model: nn.Module, x: torch.Tensor, attack, start: torch.Tensor) -> torch.Tensor:
    """PGD in the attack's ball maximising KL(f(x) || f(x')) (summed over the batch, as in the
    TRADES code; the step direction does not depend on the scale)."""
    with torch.no_grad():
        p_clean = F.softmax(model(x), 1)

    def kl_to_clean(logits, _labels):
        return F.kl_div(F.log_softmax(logits, 1), p_clean, reduction="sum")

    return pgd(model, x, None, attack.norm, attack.eps, attack.step_size, attack.steps, loss_fn=kl_to_clean,
               start=start)


def ema_decay_at(step: int, decay: float) -> float:
    """The averaging decay at optimizer step t (from 0): min(decay, (1 + t) / (10 + t)), so
    early averages forget the random initialisation quickly (Wang et al. 2023)."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """An exponential moving average of a model's parameters; buffers (BatchNorm statistics)
    are copied from the live model, as in Wang et al.'s code."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.step = decay, 0
        self.model = copy.deepcopy(model)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = ema_decay_at(self.step, self.decay)
        for averaged, live in zip(self.model.parameters(), model.parameters()):
            averaged.mul_(decay).add_(live.detach(), alpha=1.0 - decay)
        for averaged, live in zip(self.model.buffers(), model.buffers()):
            averaged.copy_(live)
        self.step += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.step = int(state["step"])


def parameter_groups(model: nn.Module, weight_decay: float, decay_batchnorm: bool) -> list[dict]:
    """SGD parameter groups: one decayed group, or (decay_batchnorm false) BatchNorm weights
    and every bias in a group without weight decay (Wang et al.'s code)."""
    if decay_batchnorm:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    decayed, undecayed = [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            plain = isinstance(module, nn.modules.batchnorm._BatchNorm) or name == "bias"
            (undecayed if plain else decayed).append(parameter)
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": undecayed, "weight_decay": 0.0}]


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier at optimizer step `step`: a linear warm-up to 1 over `warmup`
    steps, then cosine decay to 0 over the rest (per step; no warm-up = PORT's cosine)."""
    if step < warmup:
        return (step + 1) / warmup
    remaining = max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, remaining) / remaining))
