"""Choose which filtered synthetic images PORT trains on, and materialise them.

- `random`: k filtered images at random (seeded): the paper's ablation.
- `adaptive`: the k filtered images with the lowest synthetic score, i.e. those the robust
  discriminator finds hardest to tell from real ones (paper Section 3.2).
- `confidence`: in each pseudo-label class, the given fraction of filtered images on which the
  labeler is most confident in its predicted class (the filter of Wang et al. 2023); `k` does
  not apply.
- `group<g>`: the g-th of `n_groups` equal groups of filtered images sorted by score (paper
  Figure 5): training on each group shows how robustness varies with the score.

Before choosing, the near-duplicates of test images that the audit flagged (port.audit, when
`audit.drop` is true) leave the candidates; the set records how many (`test_duplicates_removed`).
The chosen images are copied, with their pseudo-labels, into one chunked HDF5 set so that
training streams whole chunks of exactly what it uses.
"""

from __future__ import annotations

import logging

import numpy as np

from .artifacts import (ImageWriter, copy_image_subset, dataset_of, image_set_length, iter_image_blocks, provenance,
                        read_arrays, read_attrs)
from .errors import ArtifactError, SettingsError
from .paths import SELECTIONS, group_of, needs_scores
from .seeds import rng

log = logging.getLogger(__name__)


def top_confidence_per_class(candidates: np.ndarray, labels: np.ndarray, confidence: np.ndarray,
                             fraction: float) -> np.ndarray:
    """Sorted indices: per class, the round(fraction * n_class) candidates with the highest
    confidence (ties: lower index first)."""
    if not 0 < fraction <= 1:
        raise SettingsError(f"selection 'confidence': fraction must lie in (0, 1], got {fraction} (selection.fraction)")
    if len(confidence) != len(labels) or np.isnan(confidence[candidates]).any():
        raise ArtifactError("selection 'confidence' needs one finite confidence per synthetic image")
    chosen = []
    for label in np.unique(labels[candidates]):
        members = candidates[labels[candidates] == label]
        n_keep = int(np.floor(fraction * len(members) + 0.5))
        chosen.append(members[np.argsort(-confidence[members], kind="stable")[:n_keep]])
    return np.sort(np.concatenate(chosen))


def choose(keep: np.ndarray, method: str, k: int | None, seed: int, scores: np.ndarray | None = None,
           n_groups: int | None = None, labels: np.ndarray | None = None, confidence: np.ndarray | None = None,
           fraction: float | None = None) -> np.ndarray:
    """Sorted indices of the chosen images among those with keep=True."""
    candidates = np.flatnonzero(keep)
    if len(candidates) == 0:
        raise ArtifactError("the filter kept no synthetic images: nothing to select")
    if method == "confidence":
        if labels is None or confidence is None or fraction is None:
            raise ArtifactError("selection 'confidence' needs labels, the labeler's confidences and a fraction")
        return top_confidence_per_class(candidates, labels, confidence, fraction)
    if needs_scores(method):
        if scores is None or len(scores) != len(keep):
            raise ArtifactError(f"selection '{method}' needs one score per synthetic image")
        if np.isnan(scores[candidates]).any():
            raise ArtifactError(f"selection '{method}': scores contain NaN")
        by_score = candidates[np.argsort(scores[candidates], kind="stable")]  # ties: lower index first
    g = group_of(method)
    if g is not None:
        if not n_groups or g >= n_groups:
            raise SettingsError(f"selection '{method}': group index must be below n_groups ({n_groups})")
        if n_groups > len(candidates):
            raise ArtifactError(f"cannot split {len(candidates)} filtered images into {n_groups} groups")
        return np.sort(np.array_split(by_score, n_groups)[g])
    if method not in SELECTIONS:
        raise SettingsError(f"unknown selection method '{method}' (known: {', '.join(SELECTIONS)}, group<g>)")
    if k is None:
        return candidates
    if k > len(candidates):
        raise ArtifactError(f"cannot select k={k} images (selection.k): only {len(candidates)} passed the filter")
    if method == "random":
        return np.sort(rng(seed, "select").choice(candidates, size=k, replace=False))
    return np.sort(by_score[:k])


def without_test_duplicates(keep: np.ndarray, audit_path) -> tuple[np.ndarray, int]:
    """The filter's keep mask less the audit's near-duplicates of test images, and how many of
    the kept images that removed."""
    flagged = read_arrays(audit_path, "test_duplicate")["test_duplicate"]
    if len(flagged) != len(keep):
        raise ArtifactError(f"{audit_path}: audit covers {len(flagged)} images but the filter {len(keep)}")
    return keep & ~flagged, int((keep & flagged).sum())


def select_images(*, images_path, filter_path, out_path, method: str, k: int | None, seed: int, scores_path=None,
                  n_groups: int | None = None, real_path=None, labels_path=None, fraction: float | None = None,
                  audit_path=None) -> int:
    """Copy the chosen images and pseudo-labels into `out_path`. `confidence` reads the
    labeler's probabilities (`lanet_probs`, the labeler whose argmax is the pseudo-label) from
    `labels_path`; with `audit_path`, the audit's near-duplicates of test images are not candidates.

    With `real_path`, the set also records the real training set's class count and channel
    statistics, so that a classifier can be trained on the synthetic images alone."""
    arrays = read_arrays(filter_path, "keep", "labels")
    n_images = image_set_length(images_path)
    if len(arrays["keep"]) != n_images or len(arrays["labels"]) != n_images:
        raise ArtifactError(f"{filter_path}: filter covers {len(arrays['keep'])} images "
                            f"({len(arrays['labels'])} labels) but {images_path} holds {n_images}")
    scores = None
    if scores_path is not None:
        scores = read_arrays(scores_path, "score")["score"]
        if len(scores) != n_images:
            raise ArtifactError(f"{scores_path}: {len(scores)} scores but {images_path} holds {n_images} images")
    confidence = None
    if labels_path is not None:
        probs = read_arrays(labels_path, "lanet_probs")["lanet_probs"]
        if len(probs) != n_images:
            raise ArtifactError(f"{labels_path}: {len(probs)} label probabilities but {images_path} holds {n_images}")
        confidence = probs.max(1)
    keep, removed = arrays["keep"], 0
    if audit_path is not None:
        keep, removed = without_test_duplicates(keep, audit_path)
        log.info("%d filtered images are near-duplicates of test images: not selected", removed)
    try:
        chosen = choose(keep, method, k, seed, scores, n_groups, arrays["labels"], confidence, fraction)
    except ArtifactError as err:
        raise ArtifactError(f"{filter_path}: {err}") from err
    extra = {}
    if real_path is not None:
        real = read_attrs(real_path)
        extra = {key: real[key] for key in ("num_classes", "channel_mean", "channel_std")}
    attrs = provenance("select", {"method": method, "k": k, "n_groups": n_groups, "fraction": fraction}, seed,
                       dataset=dataset_of(images_path), test_duplicates_removed=removed, **extra)
    mask = np.zeros(len(arrays["keep"]), dtype=bool)
    mask[chosen] = True
    per_image = {"labels": arrays["labels"]} if scores is None else {"labels": arrays["labels"], "score": scores}
    first = next(iter_image_blocks(images_path, block=1))[1]
    with ImageWriter(out_path, first.shape[1:], attrs) as writer:
        copy_image_subset(images_path, writer, mask, **per_image)
    log.info("selected %d images (%s)", len(chosen), method)
    return len(chosen)
