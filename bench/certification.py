"""Benchmark 3: randomized-smoothing certification, noisy forward passes/s of a CIFAR ResNet-18
(sigma 0.25): the project's counting (port.smoothing.Smooth: bf16 autocast and channels_last on
CUDA, counts kept on the device, one host sync per image) against a plain fp32 loop (Cohen et
al.'s core.py: NCHW, counts copied to the host after every batch), same model, noise and batch size.

    python bench/certification.py           # full GPU setting
    python bench/certification.py --small   # CPU, seconds

`agreement` compares the class counts of both paths for the same seeded noise: identical in fp32.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

import harness
from port.compute import Compute
from port.models import build_model
from port.smoothing import Smooth

SIGMA = 0.25
CIFAR = {"in_channels": 3, "num_classes": 10, "mean": [0.4914, 0.4822, 0.4465], "std": [0.2471, 0.2435, 0.2616]}


def plain_counts(model, x, num: int, batch_size: int, generator) -> np.ndarray:
    """Cohen et al.'s _sample_noise: fp32, NCHW, a host copy of each batch's predictions."""
    counts = np.zeros(CIFAR["num_classes"], dtype=np.int64)
    with torch.no_grad():
        for start in range(0, num, batch_size):
            size = min(batch_size, num - start)
            noise = torch.randn((size, *x.shape), generator=generator, device=x.device)
            predictions = model(x.unsqueeze(0) + noise * SIGMA).argmax(1)
            counts += np.bincount(predictions.cpu().numpy(), minlength=CIFAR["num_classes"])
    return counts


def main():
    p = harness.parser(__doc__.split("\n\n")[0], precision=True)
    args = harness.parse(p)
    device = torch.device(args.device)
    if args.small:
        arch, image_size, num, batch_size = "small_cnn", 8, 2000, 1000
        timing = {"warmup": 1, "repeats": 2}
    else:
        arch, image_size, num, batch_size = "resnet18", 32, 10000, 10000  # n and batch of the cifar10 config
        timing = {"warmup": 2, "repeats": 3, "min_seconds": 2.0}
    torch.manual_seed(0)
    model = build_model(arch, image_size=image_size, **CIFAR).to(device)
    x = torch.rand(CIFAR["in_channels"], image_size, image_size, device=device)
    for norm in model.modules():  # BatchNorm statistics of noisy images (one pass, cumulative), so the
        if isinstance(norm, torch.nn.BatchNorm2d):  # random net's answers vary with the noise
            norm.momentum = None
    with torch.no_grad():
        model(x + SIGMA * torch.randn(min(batch_size, 512), *x.shape, device=device))
    model.eval()
    plain_model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    smooth = Smooth(model, CIFAR["num_classes"], SIGMA, Compute(args.precision))

    def seeded():
        return torch.Generator(device=device).manual_seed(0)

    fast_counts = smooth._sample_noise(x, num, batch_size, seeded())
    plain = plain_counts(plain_model, x, num, batch_size, seeded())
    agreement = {"counts_fast": fast_counts.tolist(), "counts_plain": plain.tolist(),
                 "counts_equal": bool((fast_counts == plain).all()),
                 "total_variation": float(np.abs(fast_counts - plain).sum() / (2 * num))}

    generator = seeded()
    plain_rate = harness.rate(lambda: plain_counts(plain_model, x, num, batch_size, generator), num, device, **timing)
    fast_rate = harness.rate(lambda: smooth._sample_noise(x, num, batch_size, generator), num, device, **timing)
    rows = [harness.compared(f"certification noisy forward passes, {arch}", "noisy images/s", fast_rate, plain_rate,
                             arch=arch, agreement=agreement)]
    settings = {"arch": arch, "image_size": image_size, "sigma": SIGMA, "noise_per_call": num,
                "batch_size": batch_size, "precision": args.precision, "timing": timing,
                "plain": "Cohen et al. core.py loop: fp32 NCHW, host copy of every batch"}
    harness.write_result("certification", args, settings, rows)


if __name__ == "__main__":
    main()
