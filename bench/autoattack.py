"""Benchmark 6: AutoAttack, standard version (APGD-CE, APGD-T, FAB-T, Square), linf 8/255, on a
CIFAR ResNet-18 in fp32 (evaluation stays exact): images/s of port.evaluation.autoattack_accuracy.

    python bench/autoattack.py           # full GPU setting
    python bench/autoattack.py --small   # CPU, seconds

The network has random weights and is scored on its own predictions (clean accuracy 100%), so
APGD-CE breaks nearly every image and the later attacks see few: a robust model, on which all
four attacks run on most images, costs several times more per image. The robust accuracy is
recorded so the two cases can be told apart. There is no plain baseline: AutoAttack is the reference.
"""

from __future__ import annotations

import torch

import harness
from port.evaluation import autoattack_accuracy, predict
from port.models import build_model

CIFAR = {"in_channels": 3, "num_classes": 10, "mean": [0.4914, 0.4822, 0.4465], "std": [0.2471, 0.2435, 0.2616]}


def main():
    p = harness.parser(__doc__.split("\n\n")[0])
    args = harness.parse(p)
    device = torch.device(args.device)
    if args.small:
        arch, image_size, n, batch_size, eps = "small_cnn", 8, 16, 16, 0.25  # a large eps: APGD-CE ends it
    else:
        arch, image_size, n, batch_size, eps = "resnet18", 32, 1000, 1000, 8 / 255
    torch.manual_seed(0)
    model = build_model(arch, image_size=image_size, **CIFAR).to(device).eval()
    x = torch.rand(n, CIFAR["in_channels"], image_size, image_size, device=device)
    y = predict(model, x)
    robust = []

    def run():
        robust.append(autoattack_accuracy(model, x, y, "linf", eps, seed=0, batch_size=batch_size))

    images_per_s = harness.rate(run, n, device, warmup=0, repeats=1)
    rows = [{"what": f"AutoAttack standard linf, {arch}, fp32", "unit": "images/s", "rate": images_per_s,
             "baseline_rate": None, "ratio": None, "arch": arch, "robust_accuracy": robust[-1]}]
    settings = {"arch": arch, "image_size": image_size, "n_images": n, "batch_size": batch_size, "eps": eps,
                "version": "standard", "precision": "fp32", "weights": "random, labels = own predictions"}
    harness.write_result("autoattack", args, settings, rows)


if __name__ == "__main__":
    main()
