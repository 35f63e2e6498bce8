"""Ranking generators (paper Table 6, in small).

The reference ranking is transferred robustness: robust test accuracy of a classifier
adversarially trained on one generator's synthetic images alone. ARC is compared with it,
and with two baselines: a Frechet distance in the feature space of the `lanet` labeler (an
FID computed with a classifier trained on the dataset itself, since no Inception weights can
be downloaded here) and the mean distance from a synthetic image to its nearest real one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import linalg
from scipy.stats import rankdata
from sklearn.neighbors import NearestNeighbors

from .artifacts import image_set_length, iter_image_blocks, read_csv, read_image_set, write_csv
from .errors import ArtifactError
from .evaluation import evenly_spaced
from .models import load_model, penultimate_features

# metric -> True when a higher value means a better generator; `arc` is port.discrimination.arc (eps in
# 1/255, accuracy below chance counted as chance), not the paper's unclipped line
METRICS = {"transfer_robust_acc": True, "arc": False, "frechet_lanet": False, "nn_distance": False}
REFERENCE = "transfer_robust_acc"


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to a and b."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # singular product: regularise as in the reference FID code
        offset = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))


def nearest_real_distance(synthetic: np.ndarray, real: np.ndarray) -> float:
    """Mean l2 distance (pixels in [0, 1]) from each synthetic image to its nearest real one."""
    flat = lambda images: images.reshape(len(images), -1).astype(np.float32) / 255.0  # noqa: E731
    distances, _ = NearestNeighbors(n_neighbors=1).fit(flat(real)).kneighbors(flat(synthetic))
    return float(distances.mean())


def sample_images(path, n: int) -> np.ndarray:
    """n evenly spaced images of a (possibly huge) image set, read block by block."""
    keep = np.zeros(image_set_length(path), bool)
    keep[evenly_spaced(len(keep), n)] = True
    return np.concatenate([block[keep[offset:offset + len(block)]] for offset, block in iter_image_blocks(path)])


def distribution_metrics(*, images_path, train_path, lanet_path, out_csv, generator: str, n_images: int) -> dict:
    """Frechet distance in lanet feature space and nearest-real distance for one generator."""
    synthetic = sample_images(images_path, n_images)
    real, _ = read_image_set(train_path)
    lanet, _ = load_model(lanet_path, expect_images=images_path)
    row = {"generator": generator, "n_images": len(synthetic),
           "frechet_lanet": frechet_distance(penultimate_features(lanet, synthetic), penultimate_features(lanet, real)),
           "nn_distance": nearest_real_distance(synthetic, real)}
    write_csv(pd.DataFrame([row]), out_csv)
    return row


def rank_generators(*, arc_summary_csv, distribution_csvs, transfer_csvs, out_csv) -> pd.DataFrame:
    """Tidy table: generator, metric, value, rank (1 = best), the reference (transferred
    robustness) rank, and per metric the mean absolute rank difference from the reference. ARC's
    value is its mean over discriminator seeds (arc_summary.csv)."""
    summary = read_csv(arc_summary_csv)
    arc = summary[summary["metric"] == "arc"][["generator", "mean"]].rename(columns={"mean": "arc"})
    distribution = pd.concat([read_csv(p) for p in distribution_csvs])[["generator", "frechet_lanet", "nn_distance"]]
    transfer = pd.concat([read_csv(p) for p in transfer_csvs]).rename(
        columns={"pgd_acc": "transfer_robust_acc", "clean_acc": "transfer_clean_acc"})
    wide = arc.merge(distribution, on="generator", how="outer").merge(
        transfer[["generator", "transfer_robust_acc", "transfer_clean_acc"]], on="generator", how="outer")
    if wide[list(METRICS)].isna().any().any() or len(wide) < 2:
        raise ArtifactError(f"{out_csv}: every generator needs every metric, and ranking needs two generators:\n{wide}")
    reference = rankdata(-wide[REFERENCE].to_numpy(), method="min")
    rows = []
    for metric, higher_is_better in METRICS.items():
        values = wide[metric].to_numpy(float)
        ranks = rankdata(-values if higher_is_better else values, method="min")
        gap = np.abs(ranks - reference).mean()
        rows += [{"generator": g, "metric": metric, "value": v, "higher_is_better": higher_is_better,
                  "rank": int(r), "reference_rank": int(ref), "mean_abs_rank_diff": float(gap)}
                 for g, v, r, ref in zip(wide["generator"], values, ranks, reference, strict=True)]
    table = pd.DataFrame(rows).sort_values(["metric", "rank", "generator"], kind="stable")
    write_csv(table, out_csv)
    return table
