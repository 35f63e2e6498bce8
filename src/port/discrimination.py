"""Robust discrimination (Sehwag et al. 2022, Sections 2.2 and 3.2, Appendix C).

A binary classifier tells real (0) from synthetic (1) images of one generator. It is trained
adversarially (linf PGD) at each eps of a grid by the PORT trainer itself: real and synthetic
batches mixed 1:1 with gamma = 0.5 is exactly balanced real-vs-synthetic training, and one
epoch is one pass over the real training set, as in the paper.

- ARC: area under (robust discrimination accuracy - 0.5) over eps. A generator whose samples
  stop being distinguishable at small eps is closer to the real distribution.
- Synthetic score of an image: the minimum over the linf ball of radius eps_score of the
  discriminator's probability that it is synthetic. Low scores mark images that look real.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .artifacts import (ArtifactError, ImageWriter, copy_image_subset, dataset_of, image_set_length,
                        iter_image_blocks, provenance, read_attrs, read_csv, read_image_set, write_arrays, write_csv,
                        write_images)
from .attacks import Attack
from .devices import default_device
from .evaluation import accuracy, evenly_spaced
from .loaders import to_tensor
from .models import load_model
from .reporting import plot_arc_curves
from .seeds import rng
from .shards import shard_bounds

log = logging.getLogger(__name__)
REAL, SYNTHETIC = 0, 1


def _two_class_attrs(real_path, stage: str, settings: dict, seed: int | None) -> dict:
    real = read_attrs(real_path)
    return provenance(stage, settings, seed, dataset=dataset_of(real_path), num_classes=2,
                      channel_mean=real["channel_mean"], channel_std=real["channel_std"])


def synthetic_heldout_split(n_synthetic: int, n_heldout: int, n_train: int | None,
                            seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training pool, held-out) masks over the synthetic images, disjoint and seeded: the
    discriminator's own held-out set (not the classifier's validation_split)."""
    if n_heldout >= n_synthetic:
        raise ArtifactError(f"cannot hold out {n_heldout} of {n_synthetic} synthetic images and still train")
    order = rng(seed, "discriminator-heldout").permutation(n_synthetic)
    pool, heldout = np.zeros(n_synthetic, bool), np.zeros(n_synthetic, bool)
    heldout[order[:n_heldout]] = True
    pool[order[n_heldout:][:n_train]] = True
    return pool, heldout


def discrimination_sets(*, train_path, test_path, synthetic_path, out_real, out_synthetic, out_heldout,
                        settings: dict, seed: int) -> dict:
    """The discriminator's data: real training images labelled 0, a pool of synthetic images
    labelled 1, and a balanced held-out set (real test images + as many held-out synthetic)."""
    n_synthetic = image_set_length(synthetic_path)
    pool, heldout = synthetic_heldout_split(n_synthetic, settings["n_heldout"], settings.get("n_train_synthetic"), seed)
    images, _ = read_image_set(train_path)
    write_images(out_real, images, _two_class_attrs(train_path, "discriminator_real", settings, seed),
                 labels=np.full(len(images), REAL, dtype=np.int64))
    shape = images.shape[1:]
    with ImageWriter(out_synthetic, shape, _two_class_attrs(train_path, "discriminator_synthetic", settings,
                                                            seed)) as writer:
        copy_image_subset(synthetic_path, writer, pool, labels=np.full(n_synthetic, SYNTHETIC, dtype=np.int64))
    test_images, _ = read_image_set(test_path)
    n_each = min(len(test_images), int(heldout.sum()))
    real_eval = test_images[evenly_spaced(len(test_images), n_each)]
    held_index = np.flatnonzero(heldout)[:n_each]
    held_mask = np.zeros(n_synthetic, bool)
    held_mask[held_index] = True
    with ImageWriter(out_heldout, shape, _two_class_attrs(train_path, "discriminator_heldout", settings,
                                                          seed)) as writer:
        writer.append(real_eval, labels=np.full(n_each, REAL, dtype=np.int64), source_index=np.full(n_each, -1))
        copy_image_subset(synthetic_path, writer, held_mask, labels=np.full(n_synthetic, SYNTHETIC, dtype=np.int64))
    counts = {"n_real_train": len(images), "n_synthetic_train": int(pool.sum()), "n_heldout_each": n_each}
    log.info("discrimination sets: %s", counts)
    return counts


def evaluate_discriminator(*, model_path, heldout_path, out_csv, eps: float, settings: dict, seed: int,
                           row: dict) -> dict:
    """Clean and robust discrimination accuracy on the balanced held-out set; PGD at `eps`."""
    model, _ = load_model(model_path, expect_classes=2)
    device = default_device()
    model.to(device)
    images, labels = read_image_set(heldout_path, 2)
    x, y = to_tensor(images).to(device), torch.from_numpy(labels).to(device)
    torch.manual_seed(seed)
    result = {**row, "eps": eps, "clean_acc": accuracy(model, x, y)}
    if eps > 0:
        steps = settings["eval_steps"]
        attack = Attack("linf", eps, settings["step_factor"] * eps / steps, steps)
        result["robust_acc"] = accuracy(model, x, y, attack=attack)
    else:
        result["robust_acc"] = result["clean_acc"]
    result["n_eval"] = len(y)
    log.info("discriminator at eps %.5f: clean %.4f robust %.4f", eps, result["clean_acc"], result["robust_acc"])
    write_csv(pd.DataFrame([result]), out_csv)
    return result


def arc(eps, robust_acc) -> float:
    """Area under (robust discrimination accuracy - 0.5) over eps (trapezoidal rule).

    Accuracy below chance counts as chance: a constant prediction scores 0.5 on the balanced
    held-out set under any attack, so no discriminator needs to do worse. (A near-chance
    discriminator of two identical distributions is flipped by PGD to far below 0.5.)"""
    eps, robust_acc = np.asarray(eps, float), np.asarray(robust_acc, float)
    if len(eps) < 2:
        raise ArtifactError(f"ARC needs at least two eps values, got {len(eps)}")
    order = np.argsort(eps)
    return float(np.trapezoid(np.maximum(robust_acc[order], 0.5) - 0.5, eps[order]))


def arc_curve(*, metric_csvs, out_csv) -> pd.DataFrame:
    """One generator's robust discrimination accuracy per eps (a tidy CSV sorted by eps)."""
    curve = pd.concat([read_csv(p) for p in metric_csvs], ignore_index=True).sort_values("eps", kind="stable")
    if curve["generator"].nunique() != 1:
        raise ArtifactError(f"{out_csv}: metrics of several generators {sorted(curve['generator'].unique())}")
    write_csv(curve, out_csv)
    return curve


def arc_table(*, curve_csvs, out_table, out_plot) -> pd.DataFrame:
    """ARC per generator (lowest first: hardest to tell from real data) and the paper's Figure 3."""
    curves = [read_csv(p) for p in curve_csvs]
    table = pd.DataFrame([{"generator": c["generator"].iloc[0], "arc": arc(c["eps"], c["robust_acc"]),
                           "clean_acc": float(c.loc[c["eps"].idxmin(), "clean_acc"]),
                           "robust_acc_at_max_eps": float(c.loc[c["eps"].idxmax(), "robust_acc"]),
                           "max_eps": float(c["eps"].max())} for c in curves])
    table = table.sort_values("arc", kind="stable").reset_index(drop=True)
    write_csv(table, out_table)
    plot_arc_curves(curves, dict(zip(table["generator"], table["arc"])), out_plot)
    return table


def synthetic_scores(model, x: torch.Tensor, eps: float, steps: int, step_size: float):
    """(score, unperturbed probability): the minimum over the PGD iterates (unperturbed image
    included) of P(synthetic), so the score never exceeds the unperturbed output."""
    x = x.detach()
    with torch.no_grad():
        clean = torch.softmax(model(x), 1)[:, SYNTHETIC]
    best = clean.clone()
    delta = torch.zeros_like(x)
    for _ in range(steps if eps > 0 else 0):
        delta.requires_grad_(True)
        prob = torch.softmax(model(x + delta), 1)[:, SYNTHETIC]
        (grad,) = torch.autograd.grad(prob.sum(), delta)
        with torch.no_grad():
            best = torch.minimum(best, prob.detach())
            delta = (delta - step_size * grad.sign()).clamp(-eps, eps)
            delta = (x + delta).clamp(0, 1) - x
    with torch.no_grad():
        best = torch.minimum(best, torch.softmax(model(x + delta), 1)[:, SYNTHETIC])
    return best, clean


def score_shard(*, model_path, images_path, out_path, shard: int, n_shards: int, settings: dict,
                progress: bool = True) -> int:
    """Scores of images [start, stop) of one shard; merged with port.shards.merge_array_shards."""
    start, stop = shard_bounds(image_set_length(images_path), n_shards, shard)
    model, _ = load_model(model_path, expect_classes=2)
    device = default_device()
    model.to(device)
    eps, steps = float(settings["eps"]), int(settings["steps"])
    step_size = settings["step_factor"] * eps / steps
    scores, clean = [np.zeros(0, np.float32)], [np.zeros(0, np.float32)]
    for _, block in tqdm(iter_image_blocks(images_path, settings["batch_size"], start, stop),
                         total=-(-(stop - start) // settings["batch_size"]), desc=f"score shard {shard}",
                         disable=not progress, mininterval=10):
        best, unperturbed = synthetic_scores(model, to_tensor(block).to(device), eps, steps, step_size)
        scores.append(best.float().cpu().numpy())
        clean.append(unperturbed.float().cpu().numpy())
    attrs = provenance("score", settings, None, discriminator=str(model_path), images=str(images_path),
                       dataset=dataset_of(images_path), shard=shard, image_offset=start, image_stop=stop)
    write_arrays(out_path, attrs, score=np.concatenate(scores), clean_score=np.concatenate(clean))
    return stop - start
