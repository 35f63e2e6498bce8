"""Choose which filtered synthetic images PORT trains on, and materialise them.

The chosen images are copied, with their pseudo-labels, into one chunked HDF5 set so that
training streams whole chunks of exactly what it uses.
"""

from __future__ import annotations

import logging

import numpy as np

from .artifacts import (ArtifactError, ImageWriter, dataset_of, image_set_length, iter_image_blocks, provenance,
                        read_arrays)
from .seeds import rng

log = logging.getLogger(__name__)
METHODS = ("random",)


def choose(keep: np.ndarray, method: str, k: int | None, seed: int) -> np.ndarray:
    """Sorted indices of the chosen images among those with keep=True."""
    candidates = np.flatnonzero(keep)
    if len(candidates) == 0:
        raise ArtifactError("the filter kept no synthetic images: nothing to select")
    if k is None:
        return candidates
    if k > len(candidates):
        raise ArtifactError(f"cannot select k={k} images (selection.k): only {len(candidates)} passed the filter")
    if method == "random":
        return np.sort(rng(seed, "select").choice(candidates, size=k, replace=False))
    raise ArtifactError(f"unknown selection method '{method}' (known: {', '.join(METHODS)})")


def select_images(images_path, filter_path, out_path, method: str, k: int | None, seed: int) -> int:
    arrays = read_arrays(filter_path, "keep", "labels")
    n_images = image_set_length(images_path)
    if len(arrays["keep"]) != n_images or len(arrays["labels"]) != n_images:
        raise ArtifactError(f"{filter_path}: filter covers {len(arrays['keep'])} images "
                            f"({len(arrays['labels'])} labels) but {images_path} holds {n_images}")
    try:
        chosen = choose(arrays["keep"], method, k, seed)
    except ArtifactError as err:
        raise ArtifactError(f"{filter_path}: {err}") from err
    attrs = provenance("select", {"method": method, "k": k}, seed, dataset=dataset_of(images_path))
    mask = np.zeros(len(arrays["keep"]), dtype=bool)
    mask[chosen] = True
    first = next(iter_image_blocks(images_path, block=1))[1]
    with ImageWriter(out_path, first.shape[1:], attrs) as writer:
        for offset, block in iter_image_blocks(images_path):
            take = mask[offset:offset + len(block)]
            if take.any():
                index = offset + np.flatnonzero(take)
                writer.append(block[take], labels=arrays["labels"][index], source_index=index)
    log.info("selected %d images (%s)", len(chosen), method)
    return len(chosen)
