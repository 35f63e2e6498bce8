"""Robustness evaluation: clean accuracy, PGD accuracy and AutoAttack (standard version, or a
named subset of its attacks with the standard settings)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .artifacts import read_image_set, write_csv
from .attacks import Attack
from .data import validation_split
from .errors import SettingsError
from .loaders import to_tensor

log = logging.getLogger(__name__)
AUTOATTACK_NORMS = {"linf": "Linf", "l2": "L2"}
STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")  # AutoAttack's standard version, in its order


def autoattack_name(attacks) -> str:
    """The `autoattack_attacks` column: "standard", or the attacks run, joined by "+"."""
    attacks = tuple(a for a in STANDARD_ATTACKS if a in (attacks or STANDARD_ATTACKS))  # the order they run in
    return "standard" if attacks == STANDARD_ATTACKS else "+".join(attacks)


def predict(model, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def accuracy(model, x: torch.Tensor, y: torch.Tensor, attack=None, attack_steps: int | None = None,
             batch_size: int = 512) -> float:
    """Fraction classified correctly, optionally after attacking each batch."""
    if len(x) == 0:
        return float("nan")
    if attack is None:
        return (predict(model, x, batch_size) == y).float().mean().item()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        x_adv = attack(model, xb, yb, steps=attack_steps)
        correct += (predict(model, x_adv) == yb).sum().item()
    return correct / len(x)


def autoattack_accuracy(model, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, seed: int,
                        batch_size: int = 500, attacks=STANDARD_ATTACKS) -> float:
    """Robust accuracy under AutoAttack's standard version, or under the given subset of its
    attacks run in the standard order with the standard settings (restarts, target classes, queries)."""
    from pyautoattack import AutoAttack

    unknown = sorted(set(attacks) - set(STANDARD_ATTACKS))
    if unknown or not attacks:
        raise SettingsError(f"evaluation.autoattack_attacks: {unknown or 'empty'} (AutoAttack's standard attacks "
                            f"are {', '.join(STANDARD_ATTACKS)})")

    # pyautoattack flattens gradients with `.view`, which needs contiguous NCHW memory; our
    # tensors are channels-last (the same memory as contiguous only for one channel).
    x = x.contiguous()
    # pyautoattack reports per-attack robust accuracy at DEBUG level; let it reach the job log.
    aa_logger = logging.getLogger("auto-attack")
    previous_level = aa_logger.level
    aa_logger.setLevel(logging.DEBUG)
    try:
        adversary = AutoAttack(model, norm=AUTOATTACK_NORMS[norm], eps=eps, seed=seed, version="standard",
                               device=x.device)
        adversary.attacks_to_run = [a for a in STANDARD_ATTACKS if a in attacks]
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    finally:
        aa_logger.setLevel(previous_level)
    perturbation = (x_adv - x).flatten(1)
    size = perturbation.abs().max(1).values if norm == "linf" else perturbation.norm(dim=1)
    if (size > eps * (1 + 1e-4) + 1e-6).any():
        raise RuntimeError(f"AutoAttack returned a perturbation of size {size.max():.5f} > eps {eps}")
    return (predict(model, x_adv) == y).float().mean().item()


def evenly_spaced(n: int, count: int | None) -> np.ndarray:
    """`count` evenly spaced indices of a set of n (all when count is null or >= n): a fixed,
    seed-free subset that covers the whole set (test images, held-out images, metric images)."""
    if not count or count >= n:
        return np.arange(n)
    return np.linspace(0, n - 1, count).round().astype(int)


def evaluate(*, model_path, test_path, out_csv, threat: dict, settings: dict, seed: int, row: dict) -> dict:
    """Evaluate one trained model and write a one-row CSV (row identity + metrics). With
    `settings["trained_on"]` (the run's val_fraction and seed), `test_path` is the run's training
    set and only the images it trained on are evaluated, not its validation split (robust training
    accuracy)."""
    from .devices import default_device
    from .models import load_model, training_record

    model, spec = load_model(model_path, expect_images=test_path)
    device = default_device()
    model.to(device)
    images, labels = read_image_set(test_path, spec["num_classes"])
    trained_on = settings.get("trained_on")  # {val_fraction, seed} of the run: its own training images
    if trained_on:
        idx = validation_split(len(images), trained_on["val_fraction"], trained_on["seed"])[0]
    else:
        idx = evenly_spaced(len(images), settings.get("n_test"))
    x, y = to_tensor(images[idx]).to(device), torch.from_numpy(labels[idx]).to(device)
    attack = Attack.from_settings({**threat, "steps": settings["pgd_steps"],
                                   "step_size": settings["pgd_step_factor"] * threat["eps"] / settings["pgd_steps"]})
    torch.manual_seed(seed)
    started = time.time()
    batch_size = settings.get("batch_size", 500)
    metrics = {"clean_acc": accuracy(model, x, y, batch_size=batch_size)}
    metrics["pgd_acc"] = accuracy(model, x, y, attack=attack, batch_size=batch_size)
    log.info("clean %.4f, PGD-%d %.4f", metrics["clean_acc"], attack.steps, metrics["pgd_acc"])
    attacks = tuple(settings.get("autoattack_attacks", STANDARD_ATTACKS))
    if settings.get("autoattack", True):
        with tqdm(total=1, desc="autoattack", mininterval=5) as bar:
            metrics["autoattack_acc"] = autoattack_accuracy(model, x, y, threat["norm"], threat["eps"], seed,
                                                            batch_size, attacks)
            bar.update()
        log.info("AutoAttack (%s) %.4f", autoattack_name(attacks), metrics["autoattack_acc"])
        metrics["autoattack_attacks"] = autoattack_name(attacks)
    else:
        metrics["autoattack_acc"], metrics["autoattack_attacks"] = float("nan"), "none"
    metrics.update(n_test=len(idx), eval_seconds=time.time() - started)
    trained = spec["metadata"]
    result = {**row, **training_record(trained), "norm": threat["norm"], "eps": threat["eps"],
              **metrics, "train_seconds": trained.get("train_seconds", float("nan"))}
    write_csv(pd.DataFrame([result]), out_csv)
    return result
