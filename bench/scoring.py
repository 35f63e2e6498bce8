"""Benchmark 4: synthetic scores, 10-step linf PGD (eps 0.25/255, the cifar10 config) minimising a
ResNet-18 discriminator's P(synthetic): images/s of the project's scorer
(port.discrimination.synthetic_scores: bf16 autocast and channels_last on CUDA, the unperturbed
pass shared with the first iterate) against a plain fp32 loop (NCHW, a separate clean pass),
same model and batch.

    python bench/scoring.py           # full GPU setting
    python bench/scoring.py --small   # CPU, seconds

`agreement` compares both paths' scores on the same batch: equal up to float rounding in fp32.
"""

from __future__ import annotations

import copy

import torch

import harness
from port.compute import Compute
from port.discrimination import SYNTHETIC, synthetic_scores
from port.models import build_model

EPS, STEPS, STEP_FACTOR = 0.25 / 255, 10, 2.5
CIFAR = {"in_channels": 3, "num_classes": 2, "mean": [0.4914, 0.4822, 0.4465], "std": [0.2471, 0.2435, 0.2616]}


def plain_scores(model, x, eps: float, steps: int, step_size: float):
    """The textbook loop: fp32, NCHW, a clean pass then `steps` PGD steps down P(synthetic)."""
    with torch.no_grad():
        clean = torch.softmax(model(x), 1)[:, SYNTHETIC]
    best, delta = clean.clone(), torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        prob = torch.softmax(model(x + delta), 1)[:, SYNTHETIC]
        (grad,) = torch.autograd.grad(prob.sum(), delta)
        with torch.no_grad():
            best = torch.minimum(best, prob.detach())
            delta = (x + (delta - step_size * grad.sign()).clamp(-eps, eps)).clamp(0, 1) - x
    with torch.no_grad():
        best = torch.minimum(best, torch.softmax(model(x + delta), 1)[:, SYNTHETIC])
    return best, clean


def main():
    p = harness.parser(__doc__.split("\n\n")[0], precision=True)
    args = harness.parse(p)
    device = torch.device(args.device)
    if args.small:
        arch, image_size, batch = "small_cnn", 8, 64
        timing = {"warmup": 1, "repeats": 2}
    else:
        arch, image_size, batch = "resnet18", 32, 4096  # the cifar10 config's scores.batch_size
        timing = {"warmup": 2, "repeats": 3, "min_seconds": 2.0}
    step_size = STEP_FACTOR * EPS / STEPS
    torch.manual_seed(0)
    model = build_model(arch, image_size=image_size, **CIFAR).to(device).eval()
    plain_model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    x = torch.rand(batch, CIFAR["in_channels"], image_size, image_size, device=device)
    compute = Compute(args.precision)

    fast_best, fast_clean = synthetic_scores(model, x, EPS, STEPS, step_size, compute)
    plain_best, plain_clean = plain_scores(copy.deepcopy(model), x, EPS, STEPS, step_size)
    agreement = {"score_max_abs_diff": (fast_best - plain_best).abs().max().item(),
                 "clean_max_abs_diff": (fast_clean - plain_clean).abs().max().item(),
                 "mean_score_drop": (plain_clean - plain_best).mean().item()}

    plain_rate = harness.rate(lambda: plain_scores(plain_model, x, EPS, STEPS, step_size), batch, device, **timing)
    fast_rate = harness.rate(lambda: synthetic_scores(model, x, EPS, STEPS, step_size, compute), batch, device,
                             **timing)
    rows = [harness.compared(f"synthetic scores, PGD-{STEPS}, {arch}", "images/s", fast_rate, plain_rate, arch=arch,
                             agreement=agreement)]
    settings = {"arch": arch, "image_size": image_size, "batch_size": batch, "eps": EPS, "steps": STEPS,
                "step_size": step_size, "precision": args.precision, "timing": timing,
                "plain": "fp32 NCHW textbook PGD with a separate clean pass"}
    harness.write_result("scoring", args, settings, rows)


if __name__ == "__main__":
    main()
