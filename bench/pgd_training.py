"""Benchmark 1: one PGD-10 adversarial-training step (linf 8/255, step 2/255) on a PORT batch of
128 real + 128 synthetic 32x32 images, CIFAR ResNet-18 and WRN-34-10: images/s of the project's
trainer step (port.training.TrainStep: bf16 autocast and channels_last on CUDA, no host sync)
against a plain fp32 loop (NCHW, loss read back every step) on the same model and batch.

    python bench/pgd_training.py            # full GPU setting
    python bench/pgd_training.py --small    # CPU, seconds
    python bench/pgd_training.py --profile  # also torch.profiler's top kernels of the first model's
                                            # step (profile_<arch>.txt) and its device busy fraction

Before timing, the project's step and the plain step each take one step from the same weights
(same layout) on the same batch and random start; their losses and weights after it are recorded
(`agreement`): equal up to float rounding in fp32 mode, close in bf16.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F

import harness
from port.attacks import random_start
from port.models import build_model
from port.training import TrainStep, port_loss
from port.settings.training import TrainSettings

THREAT = {"norm": "linf", "eps": 8 / 255, "step_size": 2 / 255, "steps": 10}
CIFAR = {"in_channels": 3, "num_classes": 10, "mean": [0.4914, 0.4822, 0.4465], "std": [0.2471, 0.2435, 0.2616]}


def plain_step(model, optimizer, x, y, n_real: int, gamma: float, start):
    """The textbook loop: fp32, NCHW, PGD then one SGD step, the loss read back every step."""
    eps, alpha, steps = THREAT["eps"], THREAT["step_size"], THREAT["steps"]
    delta = start.clone()
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y), delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    loss = port_loss(model(x + delta), y, n_real, gamma)[0]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def optimizer_for(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


def measure(arch: str, image_size: int, batch: int, args, timing: dict) -> tuple[dict, str | None]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    fast_model = build_model(arch, image_size=image_size, **CIFAR).to(device).train()
    plain_model = copy.deepcopy(fast_model).to(memory_format=torch.contiguous_format)
    cfg = TrainSettings.from_dict(dict(arch=arch, epochs=1, batch_size=batch, gamma=0.4, threat=THREAT,
                        compute={"precision": args.precision, "compile": args.compile,
                                 "compile_mode": args.compile_mode}))
    n = 2 * batch  # real + synthetic halves
    x = torch.rand(n, CIFAR["in_channels"], image_size, image_size, device=device)
    y = torch.randint(0, CIFAR["num_classes"], (n,), device=device)
    start = random_start(x, "linf", THREAT["eps"])
    twin = copy.deepcopy(fast_model)  # the plain step on the fast model's layout: compares the arithmetic
    fast_opt, plain_opt = optimizer_for(fast_model), optimizer_for(plain_model)
    fast = TrainStep(fast_model, fast_opt, cfg)

    fast_loss = fast(x, y, batch, start=start)[0].item()
    plain_loss = plain_step(twin, optimizer_for(twin), x, y, batch, cfg.gamma, start)
    param_diff = max((a.float() - b.float()).abs().max().item()
                     for a, b in zip(fast_model.parameters(), twin.parameters()))
    agreement = {"loss_fast": fast_loss, "loss_plain": plain_loss, "loss_abs_diff": abs(fast_loss - plain_loss),
                 "param_max_abs_diff_after_one_step": param_diff}

    plain_rate = harness.rate(lambda: plain_step(plain_model, plain_opt, x, y, batch, cfg.gamma,
                                                 random_start(x, "linf", THREAT["eps"])), n, device, **timing)
    fast_rate = harness.rate(lambda: fast(x, y, batch, start=random_start(x, "linf", THREAT["eps"])), n, device,
                             **timing)
    row = harness.compared(f"PGD-{THREAT['steps']} AT step, {arch}", "images/s", fast_rate, plain_rate,
                           arch=arch, agreement=agreement)
    profile = None
    if args.profile:
        profile = harness.profile_summary(lambda: fast(x, y, batch, start=random_start(x, "linf", THREAT["eps"])),
                                          device)
    return row, profile


def main():
    p = harness.parser(__doc__.split("\n\n")[0], precision=True)
    p.add_argument("--compile", action="store_true", help="torch.compile the project's step (config compute.compile)")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (config compute.compile_mode)")
    p.add_argument("--profile", action="store_true", help="record torch.profiler's top kernels of the first model")
    p.add_argument("--archs", nargs="+", help="override the architectures")
    args = harness.parse(p)
    if args.small:
        archs, image_size, batch = args.archs or ["small_cnn"], 8, 8
        timing = {"warmup": 1, "repeats": 2}
    else:
        archs, image_size, batch = args.archs or ["resnet18", "wrn-34-10", "wrn-28-10", "wrn-28-10-silu"], 32, 128
        timing = {"warmup": 2, "repeats": 3, "min_seconds": 2.0}
    rows, profiles = [], {}
    for arch in archs:
        row, profile = measure(arch, image_size, batch, args, timing)
        rows.append(row)
        if profile is not None and not profiles:
            table = profile.pop("table")
            profiles[arch] = {**profile, "table_file": f"profile_{arch}.txt"}
            print(table)
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"profile_{arch}.txt").write_text(table)
    settings = {"archs": archs, "image_size": image_size, "batch_real": batch, "batch_synthetic": batch,
                "threat": THREAT, "precision": args.precision, "compile": args.compile,
                "compile_mode": args.compile_mode if args.compile else None,
                "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "timing": timing,
                "plain": "fp32 NCHW textbook PGD + SGD step, loss read back every step"}
    if profiles:
        settings["profile"] = profiles
    name = "pgd_training" + (f"-compile-{args.compile_mode}" if args.compile else "")
    harness.write_result(name, args, settings, rows)


if __name__ == "__main__":
    main()
