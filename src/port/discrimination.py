"""Robust discrimination (Sehwag et al. 2022, Sections 2.2 and 3.2, Appendix C).

A binary classifier tells real (0) from synthetic (1) images of one generator. It is trained
adversarially (linf PGD) at each eps of a grid by the PORT trainer itself: real and synthetic
batches mixed 1:1 with gamma = 0.5 is exactly balanced real-vs-synthetic training, and one
epoch is one pass over the real training set, as in the paper.

- ARC: area under (robust discrimination accuracy - 0.5) over eps (in 1/255, as the paper;
  accuracy below chance counted as chance). A generator whose samples stop being
  distinguishable at small eps is closer to the real distribution.
- Synthetic score of an image: the minimum over the linf ball of radius eps_score of the
  discriminator's probability that it is synthetic. Low scores mark images that look real. The
  scores are cross-fitted: two discriminators train on disjoint halves of the images, and each
  scores the half it did not see (a discriminator's own training images would score apart).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .artifacts import (ImageWriter, copy_image_subset, dataset_of, image_set_length, iter_image_blocks, provenance,
                        read_arrays, read_attrs, read_csv, read_image_set, write_arrays, write_csv, write_images)
from .errors import ArtifactError, SettingsError
from .attacks import Attack
from .compute import Compute, channels_last
from .settings.data import validation_count
from .settings.threats import step_size
from .devices import default_device
from .evaluation import accuracy, autoattack_accuracy, evenly_spaced, predict
from .loaders import to_tensor
from .models import load_model
from .paths import SCORER_FOLDS
from .reporting import plot_arc_curves
from .seeds import rng
from .shards import shard_bounds
from .statistics import seed_summary

log = logging.getLogger(__name__)
REAL, SYNTHETIC = 0, 1


def _two_class_attrs(real_path, stage: str, settings: dict, seed: int | None) -> dict:
    real = read_attrs(real_path)
    return provenance(stage, settings, seed, dataset=dataset_of(real_path), num_classes=2,
                      channel_mean=real["channel_mean"], channel_std=real["channel_std"])


def synthetic_heldout_split(n_synthetic: int, n_heldout: int, n_train: int | None, seed: int,
                            key: str = "discrimination.n_heldout") -> tuple[np.ndarray, np.ndarray]:
    """(training pool, held-out) masks over the synthetic images, disjoint and seeded: the
    discriminator's own held-out set (not the classifier's validation_split). `key` names
    n_heldout's config key in the error."""
    if n_heldout >= n_synthetic:
        raise SettingsError(f"{key}={n_heldout}: cannot hold out {n_heldout} of {n_synthetic} synthetic images and "
                            f"still train (the schema default applies when the key is not set)")
    order = rng(seed, "discriminator-heldout").permutation(n_synthetic)
    pool, heldout = np.zeros(n_synthetic, bool), np.zeros(n_synthetic, bool)
    heldout[order[:n_heldout]] = True
    pool[order[n_heldout:][:n_train]] = True
    return pool, heldout


def discrimination_sets(*, train_path, test_path, synthetic_path, out_real, out_synthetic, out_validation,
                        out_heldout, settings: dict, seed: int) -> dict:
    """The discriminator's data: real training images labelled 0, a pool of synthetic images
    labelled 1, the synthetic half of the validation set (as many images, never trained on, as the
    trainer holds out of the real ones at `val_fraction`), and a balanced held-out set (real test
    images + as many held-out synthetic)."""
    n_synthetic = image_set_length(synthetic_path)
    images, _ = read_image_set(train_path)
    n_validation = validation_count(len(images), settings["val_fraction"])
    key = f"datasets.{dataset_of(train_path)}.discrimination.n_heldout"
    if settings["n_heldout"] + n_validation >= n_synthetic:
        raise SettingsError(f"{key}={settings['n_heldout']}: cannot hold out {settings['n_heldout']} of {n_synthetic} "
                            f"synthetic images next to {n_validation} for validation (val_fraction "
                            f"{settings['val_fraction']}) and still train")
    pool, heldout = synthetic_heldout_split(n_synthetic, settings["n_heldout"] + n_validation,
                                            settings.get("n_train_synthetic"), seed, key=key)
    # the first n_validation of the images held out validate; the rest are the held-out set's
    held_order = np.flatnonzero(heldout)[rng(seed, "discriminator-validation").permutation(int(heldout.sum()))]
    validation = np.zeros(n_synthetic, bool)
    validation[held_order[:n_validation]] = True
    heldout[validation] = False
    write_images(out_real, images, _two_class_attrs(train_path, "discriminator_real", settings, seed),
                 labels=np.full(len(images), REAL, dtype=np.int64))
    shape = images.shape[1:]
    with ImageWriter(out_synthetic, shape, _two_class_attrs(train_path, "discriminator_synthetic", settings,
                                                            seed)) as writer:
        copy_image_subset(synthetic_path, writer, pool, labels=np.full(n_synthetic, SYNTHETIC, dtype=np.int64))
    with ImageWriter(out_validation, shape, _two_class_attrs(train_path, "discriminator_validation", settings,
                                                             seed)) as writer:
        copy_image_subset(synthetic_path, writer, validation, labels=np.full(n_synthetic, SYNTHETIC, dtype=np.int64))
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
    counts = {"n_real_train": len(images), "n_synthetic_train": int(pool.sum()),
              "n_synthetic_validation": n_validation, "n_heldout_each": n_each}
    log.info("discrimination sets: %s", counts)
    return counts


def scorer_sets(*, train_path, synthetic_path, out_folds, out_pools, n_train: int | None, seed: int) -> dict:
    """Cross-fitting for the synthetic scores: every image gets a seeded fold (0 or 1); the pool
    of scorer f is (up to n_train of) the images of fold f, labelled synthetic, and scorer f
    scores only the images of the other fold (see score_shard)."""
    if len(out_pools) != SCORER_FOLDS:
        raise ArtifactError(f"{out_folds}: expected {SCORER_FOLDS} scorer pools, got {len(out_pools)}")
    n_synthetic = image_set_length(synthetic_path)
    order = rng(seed, "scorer-folds").permutation(n_synthetic)
    fold = np.zeros(n_synthetic, np.int8)
    fold[order[n_synthetic // 2:]] = 1
    shape = next(iter_image_blocks(synthetic_path, 1))[1].shape[1:]
    settings = {"n_train_synthetic": n_train}
    sizes = []
    for f, out in enumerate(out_pools):
        pool = np.zeros(n_synthetic, bool)
        pool[order[fold[order] == f][:n_train]] = True
        with ImageWriter(out, shape, _two_class_attrs(train_path, f"scorer_pool{f}", settings, seed)) as writer:
            sizes.append(copy_image_subset(synthetic_path, writer, pool,
                                           labels=np.full(n_synthetic, SYNTHETIC, dtype=np.int64)))
    write_arrays(out_folds, provenance("scorer_folds", settings, seed, dataset=dataset_of(synthetic_path),
                                       images=str(synthetic_path)), fold=fold)
    log.info("scorer pools of %s images (folds of %d and %d)", sizes, int((fold == 0).sum()), int((fold == 1).sum()))
    return {"pool_sizes": sizes}


def attack_accuracies(model, x, y, eps: float, settings: dict, seed: int) -> dict:
    """Robust accuracy under each evaluation attack at linf `eps`: PGD from `eval_restarts` random
    starts (an image counts only if it survives every start) and, with `apgd`, AutoAttack's APGD-CE,
    whose step size adapts: a discriminator whose gradients mislead fixed-step PGD (masking) does
    not fool it as easily."""
    steps = settings["eval_steps"]
    attack = Attack("linf", eps, step_size(eps, steps, settings["step_factor"]), steps)
    torch.manual_seed(seed)
    survived = torch.ones(len(y), dtype=torch.bool, device=y.device)
    for _ in range(settings["eval_restarts"]):
        for i in range(0, len(y), 512):
            survived[i:i + 512] &= predict(model, attack(model, x[i:i + 512], y[i:i + 512])) == y[i:i + 512]
    accuracies = {"pgd": survived.float().mean().item()}
    if settings["apgd"]:
        accuracies["apgd-ce"] = autoattack_accuracy(model, x, y, "linf", eps, seed, attacks=("apgd-ce",))
    return accuracies


def evaluate_discriminator(*, model_path, heldout_path, out_csv, eps: float, settings: dict, seed: int,
                           row: dict) -> dict:
    """Clean and robust discrimination accuracy on the balanced held-out set, and the epochs the
    discriminator trained (`epochs_run`, `best_epoch`: the weights kept). Robust accuracy is the
    minimum over the evaluation attacks (attack_accuracies); `robust_attack` names the one that set it."""
    model, spec = load_model(model_path, expect_classes=2, expect_images=heldout_path)
    device = default_device()
    model.to(device)
    images, labels = read_image_set(heldout_path, 2)
    x, y = to_tensor(images).to(device), torch.from_numpy(labels).to(device)
    trained = spec["metadata"]
    result = {**row, "eps": eps, "clean_acc": accuracy(model, x, y),
              "epochs_run": trained.get("epochs_run", trained.get("epochs")), "best_epoch": trained.get("best_epoch")}
    clean = result["clean_acc"]
    accuracies = attack_accuracies(model, x, y, eps, settings, seed) if eps > 0 else {"none": clean}
    attack = min(accuracies, key=accuracies.get)  # the first attack on a tie
    result.update(robust_acc=accuracies[attack], robust_attack=attack, pgd_acc=accuracies.get("pgd", clean),
                  apgd_ce_acc=accuracies.get("apgd-ce", clean if eps == 0 else float("nan")))
    result["n_eval"] = len(y)
    log.info("discriminator at eps %.5f: clean %.4f robust %.4f (%s)", eps, result["clean_acc"], result["robust_acc"],
             result["robust_attack"])
    write_csv(pd.DataFrame([result]), out_csv)
    return result


EPS_UNIT = 1 / 255  # the paper's ARC integrates over eps counted in grey levels of 8-bit images


def _sorted_curve(eps, robust_acc) -> tuple[np.ndarray, np.ndarray]:
    eps, robust_acc = np.asarray(eps, float), np.asarray(robust_acc, float)
    if len(eps) < 2:
        raise ArtifactError(f"ARC needs at least two eps values, got {len(eps)}")
    order = np.argsort(eps)
    return eps[order], robust_acc[order]


def arc(eps, robust_acc) -> float:
    """ARC that ranks generators: the paper's `np.trapz(Racc - 0.5, eps)` with eps in units of 1/255,
    with robust accuracy below chance counted as chance. Not the paper's line exactly: a constant
    answer scores 0.5 on the balanced held-out set under any attack, so the best robust
    discriminator never does worse, while a near-constant trained one is flipped by PGD far below
    0.5 (digits diffusion models under 12-epoch training; known-answer spheres above their margin) and
    would charge the generator an area no discriminator needs to lose. Where no point is below
    chance (the paper's CIFAR-10 values, 0.06-1.55) it equals `arc_unclipped`.
    `eps` is given in pixel units ([0, 1] images) as everywhere else in the pipeline."""
    eps, robust_acc = _sorted_curve(eps, robust_acc)
    return float(np.trapezoid(np.maximum(robust_acc, 0.5) - 0.5, eps / EPS_UNIT))


def arc_unclipped(eps, robust_acc) -> float:
    """The paper's ARC line as written, accuracy unclipped; reported next to `arc` to compare
    with published values. It does not rank."""
    eps, robust_acc = _sorted_curve(eps, robust_acc)
    return float(np.trapezoid(robust_acc - 0.5, eps / EPS_UNIT))


def collapsed_points(clean_acc, n_eval, z: float = 3.0) -> np.ndarray:
    """Which points of one generator's curve (sorted by eps) look collapsed to a constant: clean
    held-out accuracy within z standard errors of chance (binomial, n_eval images) while a smaller
    eps was clearly above it. A trained discriminator does not get worse than chance on clean
    images as eps grows unless adversarial training gave up (the two distributions did not change)."""
    clean_acc, n_eval = np.asarray(clean_acc, float), np.asarray(n_eval, float)
    noise = z * 0.5 / np.sqrt(n_eval)
    at_chance = np.abs(clean_acc - 0.5) <= noise
    clearly_above = clean_acc > 0.5 + 2 * noise
    return at_chance & np.concatenate([[False], np.logical_or.accumulate(clearly_above)[:-1]])


def attack_suspect_points(robust_acc, n_eval, z: float = 3.0) -> np.ndarray:
    """Which points of one generator's curve (sorted by eps) have robust accuracy clearly above
    chance (more than 2 z standard errors) while a smaller eps was already at or below chance
    (within z of it, or under). The best robust accuracy cannot rise with eps (a bigger ball
    holds every smaller attack), so either the attack missed this discriminator's weakness
    (gradient masking) or the smaller eps's discriminator is under-trained: its ARC is not to be trusted."""
    robust_acc, n_eval = np.asarray(robust_acc, float), np.asarray(n_eval, float)
    noise = z * 0.5 / np.sqrt(n_eval)
    at_chance = robust_acc <= 0.5 + noise
    return (robust_acc > 0.5 + 2 * noise) & np.concatenate([[False], np.logical_or.accumulate(at_chance)[:-1]])


def below_chance_points(robust_acc, n_eval, z: float = 3.0) -> np.ndarray:
    """Which points have robust accuracy below chance by more than z standard errors: a constant
    answer scores 0.5 on the balanced held-out set under any attack, so such a discriminator is not
    robust at its eps (under-trained; the case collapsed_points misses when clean accuracy stays
    high): `arc` counts the point as chance, what a constant answer guarantees, and the
    discriminator at that eps says nothing more."""
    robust_acc, n_eval = np.asarray(robust_acc, float), np.asarray(n_eval, float)
    return robust_acc < 0.5 - z * 0.5 / np.sqrt(n_eval)


def arc_curve(*, metric_csvs, out_csv) -> pd.DataFrame:
    """One generator's robust discrimination accuracy per discriminator seed and eps (a tidy CSV
    sorted by seed and eps; `eps` in pixel units, `eps_255` in units of 1/255; the epochs each
    discriminator trained, the attack that set its robust accuracy), with `collapsed` and
    `attack_suspect` flags (judged along each seed's own curve) and a `below_chance` flag per
    point, all warned in the log."""
    curve = pd.concat([read_csv(p) for p in metric_csvs], ignore_index=True)
    if curve["generator"].nunique() != 1:
        raise ArtifactError(f"{out_csv}: metrics of several generators {sorted(curve['generator'].unique())}")
    curve = curve.sort_values(["seed", "eps"], kind="stable").reset_index(drop=True)
    curve.insert(curve.columns.get_loc("eps") + 1, "eps_255", curve["eps"] / EPS_UNIT)
    curve["collapsed"] = np.concatenate([collapsed_points(one["clean_acc"], one["n_eval"])
                                         for _, one in curve.groupby("seed", sort=True)])
    curve["attack_suspect"] = np.concatenate([attack_suspect_points(one["robust_acc"], one["n_eval"])
                                              for _, one in curve.groupby("seed", sort=True)])
    curve["below_chance"] = below_chance_points(curve["robust_acc"], curve["n_eval"])
    for _, point in curve[curve["collapsed"]].iterrows():
        log.warning("%s seed %d: the discriminator at eps %.5f collapsed to chance on clean held-out images while "
                    "a smaller eps separated them: its ARC is underestimated", point["generator"], point["seed"],
                    point["eps"])
    for _, point in curve[curve["attack_suspect"]].iterrows():
        log.warning("%s seed %d: the discriminator at eps %.5f keeps robust accuracy %.3f above chance where a "
                    "smaller eps was at chance: the attack may be masked, or the smaller eps under-trained",
                    point["generator"], point["seed"], point["eps"], point["robust_acc"])
    for _, point in curve[curve["below_chance"]].iterrows():
        log.warning("%s seed %d: the discriminator at eps %.5f is below chance under attack (robust accuracy %.3f): "
                    "it is not robust at its eps; `arc` counts it as chance, `arc_unclipped` is underestimated",
                    point["generator"], point["seed"], point["eps"], point["robust_acc"])
    write_csv(curve, out_csv)
    return curve


ARC_METRICS = ["arc", "arc_unclipped"]


def arc_row(curve: pd.DataFrame) -> dict:
    """ARC and its context for one generator and discriminator seed (one curve over eps)."""
    collapsed = curve["eps"][curve["collapsed"].astype(bool)]
    below_chance = curve["eps"][curve["below_chance"].astype(bool)] if "below_chance" in curve else []
    suspect = curve["eps"][curve["attack_suspect"].astype(bool)] if "attack_suspect" in curve else []
    return {"generator": curve["generator"].iloc[0], "seed": int(curve["seed"].iloc[0]),
            "arc": arc(curve["eps"], curve["robust_acc"]),
            "arc_unclipped": arc_unclipped(curve["eps"], curve["robust_acc"]),
            "clean_acc": float(curve.loc[curve["eps"].idxmin(), "clean_acc"]),
            "robust_acc_at_max_eps": float(curve.loc[curve["eps"].idxmax(), "robust_acc"]),
            "max_eps": float(curve["eps"].max()), "max_eps_255": float(curve["eps"].max() / EPS_UNIT),
            "collapsed_eps": " ".join(f"{e:g}" for e in collapsed),
            "below_chance_eps": " ".join(f"{e:g}" for e in below_chance),
            "attack_suspect_eps": " ".join(f"{e:g}" for e in suspect)}


def arc_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per generator and ARC definition: n_seeds, mean, sd and 95% t-interval over discriminator
    seeds (the paper averages ARC over 3 runs; one seed has no interval). `rank` orders the
    generators by mean `arc` (1 = hardest to tell from real data), the ranking of generators.csv."""
    summary = seed_summary(table, ARC_METRICS, ["generator"])
    order = summary[summary["metric"] == "arc"].sort_values("mean", kind="stable")["generator"]
    summary["rank"] = summary["generator"].map({g: r for r, g in enumerate(order, start=1)})
    return summary.sort_values(["metric", "rank"], kind="stable").reset_index(drop=True)


def arc_table(*, curve_csvs, out_table, out_summary, out_plot) -> pd.DataFrame:
    """ARC per generator and discriminator seed (`out_table`, generators by mean ARC, lowest first:
    hardest to tell from real data), its mean and interval over seeds (`out_summary`), and the
    paper's Figure 3. `arc` (eps in 1/255, accuracy below chance counted as chance) ranks;
    `arc_unclipped` is the paper's line as written; `collapsed_eps` and `attack_suspect_eps` list
    the flagged points."""
    curves = [read_csv(p) for p in curve_csvs]
    rows = [arc_row(one) for c in curves for _, one in c.groupby("seed", sort=True)]
    for row in rows:
        if row["collapsed_eps"]:
            log.warning("%s seed %d: ARC from a curve with collapsed discriminators at eps %s", row["generator"],
                        row["seed"], row["collapsed_eps"])
        if row["attack_suspect_eps"]:
            log.warning("%s seed %d: ARC from a curve with suspect robust accuracy at eps %s", row["generator"],
                        row["seed"], row["attack_suspect_eps"])
    table = pd.DataFrame(rows)
    summary = arc_summary(table)
    rank = summary[summary["metric"] == "arc"].set_index("generator")["rank"]
    table = table.assign(_rank=table["generator"].map(rank)).sort_values(["_rank", "seed"], kind="stable")
    table = table.drop(columns="_rank").reset_index(drop=True)
    write_csv(table, out_table)
    write_csv(summary, out_summary)
    mean_arc = summary[summary["metric"] == "arc"].set_index("generator")["mean"].to_dict()
    plot_arc_curves(curves, mean_arc, out_plot)
    return table


def synthetic_scores(model, x: torch.Tensor, eps: float, steps: int, step_size: float,
                     compute: Compute | None = None):
    """(score, unperturbed probability): the minimum over the PGD iterates (unperturbed image
    included) of P(synthetic), so the score never exceeds the unperturbed output. The first
    iterate is the unperturbed image, so its forward pass gives the unperturbed probability.
    `compute` runs the passes in bf16 on CUDA (None: fp32); no step waits for the host."""
    x = channels_last(x.detach())
    autocast = (compute or Compute("fp32")).autocast(x.device)
    if eps <= 0 or steps == 0:
        with torch.no_grad(), autocast:
            clean = torch.softmax(model(x).float(), 1)[:, SYNTHETIC]
        return clean.clone(), clean
    delta = torch.zeros_like(x)
    clean = best = None
    with autocast:  # one region: the weights are cast to bf16 once, not once per step
        for _ in range(steps):
            delta.requires_grad_(True)
            prob = torch.softmax(model(x + delta).float(), 1)[:, SYNTHETIC]
            (grad,) = torch.autograd.grad(prob.sum(), delta)
            with torch.no_grad():
                if clean is None:
                    clean = best = prob.detach()
                best = torch.minimum(best, prob.detach())
                delta = (delta - step_size * grad.sign()).clamp(-eps, eps)
                delta = (x + delta).clamp(0, 1) - x
        with torch.no_grad():
            best = torch.minimum(best, torch.softmax(model(x + delta).float(), 1)[:, SYNTHETIC])
    return best, clean


def score_shard(*, model_paths, folds_path, images_path, out_path, shard: int, n_shards: int, settings: dict,
                progress: bool = True) -> int:
    """Scores of images [start, stop) of one shard, each from the scorer that did not train on it
    (see scorer_sets); merged with port.shards.merge_array_shards."""
    start, stop = shard_bounds(image_set_length(images_path), n_shards, shard)
    fold = read_arrays(folds_path, "fold")["fold"]
    if len(fold) != image_set_length(images_path) or len(model_paths) != SCORER_FOLDS:
        raise ArtifactError(f"{folds_path}: {len(fold)} folds and {len(model_paths)} scorers for "
                            f"{image_set_length(images_path)} images of {images_path}")
    device = default_device()
    models = [load_model(path, expect_classes=2, expect_images=images_path)[0].to(device) for path in model_paths]
    eps, steps = float(settings["eps"]), int(settings["steps"])
    step = step_size(eps, steps, settings["step_factor"])
    compute = Compute.from_settings(settings.get("compute"))
    scores, clean = np.zeros(stop - start, np.float32), np.zeros(stop - start, np.float32)
    for offset, block in tqdm(iter_image_blocks(images_path, settings["batch_size"], start, stop),
                              total=-(-(stop - start) // settings["batch_size"]), desc=f"score shard {shard}",
                              disable=not progress, mininterval=10):
        block_fold = fold[offset:offset + len(block)]
        for trained_on, model in enumerate(models):
            unseen = np.flatnonzero(block_fold != trained_on)
            if len(unseen) == 0:
                continue
            best, unperturbed = synthetic_scores(model, to_tensor(block[unseen]).to(device), eps, steps, step,
                                                 compute)
            scores[offset - start + unseen] = best.float().cpu().numpy()
            clean[offset - start + unseen] = unperturbed.float().cpu().numpy()
    attrs = provenance("score", settings, None, discriminators=[str(p) for p in model_paths], images=str(images_path),
                       dataset=dataset_of(images_path), shard=shard, image_offset=start, image_stop=stop)
    write_arrays(out_path, attrs, score=scores, clean_score=clean)
    return stop - start
