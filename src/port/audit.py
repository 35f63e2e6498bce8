"""Audit of a synthetic set against the real data: near-copies of test images and memorised
training images.

A generated image that lands next to a test image makes robust test accuracy partly a
memory test; one next to a training image is memorisation. For every synthetic image the
audit finds its nearest real test image and its nearest real training image in three spaces:

- `linf`: the largest pixel difference of the [0, 1] images;
- `rms`: the l2 distance of the [0, 1] images divided by sqrt(H*W*C), the root-mean-square
  pixel difference, so that one threshold means the same on 8x8 grey digits and 32x32 colour
  images. The near-duplicate thresholds apply to this distance: an exact copy is at 0, a copy
  with pixel noise of standard deviation s at about s;
- `lanet_cosine`: one minus the cosine similarity of the `lanet` labeler's penultimate features.

The reference is the real data's own: each real test image's nearest training image. Real test
and training images are independent draws, so the share of real test images within a
threshold of a training image is the near-duplicate rate to expect without any copying.

The search is exact (exhaustive): synthetic images are streamed from HDF5 a block at a time
and each block is compared with a block of real images per step, by matrix products (rms,
cosine) or `torch.cdist` with p=inf (linf), so memory holds one pair of blocks whatever the
size of the synthetic set. The distance of the chosen neighbour is then recomputed directly,
free of the rounding of the matrix-product expansion.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import torch

from .artifacts import (dataset_of, image_set_length, image_set_shape, iter_image_blocks, open_hdf5, provenance,
                        read_image_set, write_arrays, write_csv)
from .errors import ArtifactError, SettingsError
from .devices import default_device
from .models import load_model, penultimate_features

log = logging.getLogger(__name__)
SPACES = ("linf", "rms", "lanet_cosine")
FLAG_SPACE = "rms"  # the distance the near-duplicate thresholds apply to
REAL_SETS = ("test", "train")
QUERY_BLOCK = 1024  # synthetic images per block (one HDF5 chunk)
REFERENCE_BLOCK = 4096  # real images per step: a QUERY_BLOCK x REFERENCE_BLOCK distance matrix is 16 MB
QUANTILES = {"min": 0.0, "q01": 0.01, "q05": 0.05, "q25": 0.25, "median": 0.5}
N_CLOSEST = 16  # synthetic images shown beside their nearest test image


def flat_pixels(images: np.ndarray, device) -> torch.Tensor:
    """uint8 NHWC images -> float32 rows of H*W*C values in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return x.reshape(len(x), -1).float().div_(255.0)


def features(model, images: np.ndarray, device) -> torch.Tensor:
    """The model's penultimate features, scaled to unit length (cosine = dot product)."""
    raw = torch.from_numpy(penultimate_features(model, images)).float().to(device)
    return torch.nn.functional.normalize(raw, dim=1)


def pair_distance(a: torch.Tensor, b: torch.Tensor, space: str) -> torch.Tensor:
    """Distance between rows a[i] and b[i] (unit-length features for lanet_cosine)."""
    if space == "linf":
        return (a - b).abs().amax(1)
    if space == "rms":
        return (a - b).norm(dim=1) / math.sqrt(a.shape[1])
    if space == "lanet_cosine":
        return 1.0 - (a * b).sum(1)
    raise SettingsError(f"unknown audit space '{space}' (known: {', '.join(SPACES)})")


def nearest(queries: torch.Tensor, references: torch.Tensor, space: str,
            block: int = REFERENCE_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of every query row's nearest reference row, searching all references
    `block` rows at a time (ties: the lowest index). rms ranks by the matrix-product expansion
    |r|^2 - 2 q.r of centred rows, cosine by q.r of unit rows; the winner's distance is then
    recomputed from the two rows themselves."""
    if not len(references):
        raise ArtifactError("nearest-neighbour search against an empty set of real images")
    best = torch.full((len(queries),), math.inf, device=queries.device)
    best_index = torch.zeros(len(queries), dtype=torch.long, device=queries.device)
    centre = references.mean(0) if space == "rms" else None
    q = queries - centre if space == "rms" else queries
    for start in range(0, len(references), block):
        chunk = references[start:start + block]
        if space == "linf":
            score = torch.cdist(q, chunk, p=math.inf)
        elif space == "rms":
            chunk = chunk - centre
            score = (chunk * chunk).sum(1)[None, :] - 2.0 * (q @ chunk.T)
        elif space == "lanet_cosine":
            score = -(q @ chunk.T)
        else:
            raise SettingsError(f"unknown audit space '{space}' (known: {', '.join(SPACES)})")
        value, index = score.min(1)
        better = value < best
        best = torch.where(better, value, best)
        best_index = torch.where(better, index + start, best_index)
    return pair_distance(queries, references[best_index], space), best_index


class RealSet:
    """A real image set prepared for the search: pixel rows, unit lanet features and labels."""

    def __init__(self, path, model, device):
        images, self.labels = read_image_set(path)
        self.path, self.shape = path, images.shape[1:]
        pixels = flat_pixels(images, device)
        self.rows = {"linf": pixels, "rms": pixels, "lanet_cosine": features(model, images, device)}


def audit_arrays(images_path, real: dict[str, RealSet], model, device) -> dict[str, np.ndarray]:
    """`<real set>_<space>_distance` and `_index` of every synthetic image, block by block."""
    parts = {f"{name}_{space}_{what}": [] for name in real for space in SPACES for what in ("distance", "index")}
    for _, block in iter_image_blocks(images_path, QUERY_BLOCK):
        pixels = flat_pixels(block, device)
        queries = {"linf": pixels, "rms": pixels, "lanet_cosine": features(model, block, device)}
        for name, reference in real.items():
            for space in SPACES:
                distance, index = nearest(queries[space], reference.rows[space], space)
                parts[f"{name}_{space}_distance"].append(distance.cpu().numpy())
                parts[f"{name}_{space}_index"].append(index.cpu().numpy())
    return {key: np.concatenate(values) for key, values in parts.items()}


def reference_arrays(real: dict[str, RealSet]) -> dict[str, np.ndarray]:
    """`real_test_to_train_<space>_distance` and `_index`: each real test image's nearest training image."""
    arrays = {}
    for space in SPACES:
        distance, index = nearest(real["test"].rows[space], real["train"].rows[space], space)
        arrays[f"real_test_to_train_{space}_distance"] = distance.cpu().numpy()
        arrays[f"real_test_to_train_{space}_index"] = index.cpu().numpy()
    return arrays


def distance_stats(distance: np.ndarray) -> dict:
    return {"n": len(distance), **{name: float(np.quantile(distance, q)) if len(distance) else math.nan
                                   for name, q in QUANTILES.items()}}


def _within(distance: np.ndarray, threshold: float) -> dict:
    n = int((distance <= threshold).sum())
    return {"n_within": n, "fraction_within": n / len(distance) if len(distance) else math.nan}


def audit_table(arrays: dict, real: dict[str, RealSet], thresholds: dict[str, float], generator: str) -> pd.DataFrame:
    """Tidy summary: per compared pair (synthetic to test, synthetic to train, real test to train),
    space and class (`all`, or the class of the nearest real image; a real test image's own
    class), the distance quantiles; for the flag space, the number and fraction within the
    threshold, beside the same numbers for the real reference (`reference_*`)."""
    rows = []
    reference_distance = {space: arrays[f"real_test_to_train_{space}_distance"] for space in SPACES}
    test_labels = real["test"].labels
    for name in REAL_SETS:
        for space in SPACES:
            distance = arrays[f"{name}_{space}_distance"]
            classes = real[name].labels[arrays[f"{name}_{space}_index"]]
            for cls in ["all", *np.unique(real[name].labels)]:
                member = np.ones(len(distance), bool) if cls == "all" else classes == cls
                row = {"generator": generator, "images": "synthetic", "nearest_in": name, "space": space,
                       "class": str(cls), **distance_stats(distance[member])}
                if space == FLAG_SPACE:
                    real_member = np.ones(len(test_labels), bool) if cls == "all" else test_labels == cls
                    reference = _within(reference_distance[space][real_member], thresholds[name])
                    row.update(threshold=thresholds[name], **_within(distance[member], thresholds[name]),
                               reference_n_within=reference["n_within"],
                               reference_fraction_within=reference["fraction_within"])
                rows.append(row)
    for space in SPACES:
        for cls in ["all", *np.unique(test_labels)]:
            member = np.ones(len(test_labels), bool) if cls == "all" else test_labels == cls
            rows.append({"generator": generator, "images": "real_test", "nearest_in": "train", "space": space,
                         "class": str(cls), **distance_stats(reference_distance[space][member])})
    return pd.DataFrame(rows)


def check_thresholds(test_threshold: float, train_threshold: float) -> dict[str, float]:
    for key, value in (("test_threshold", test_threshold), ("train_threshold", train_threshold)):
        if not value >= 0:
            raise SettingsError(f"audit.{key} must be a distance >= 0, got {value}")
    return {"test": float(test_threshold), "train": float(train_threshold)}


def audit_synthetic(*, images_path, train_path, test_path, lanet_path, out_path, out_csv, out_png, generator: str,
                    test_threshold: float, train_threshold: float) -> pd.DataFrame:
    """Write the per-image nearest neighbours and flags (`out_path`, aligned with images.h5:
    `test_duplicate` within test_threshold of a test image, `train_duplicate` within
    train_threshold of a training image, both in the rms space), the real reference, the
    summary table (`out_csv`) and the report figure (`out_png`)."""
    thresholds = check_thresholds(test_threshold, train_threshold)
    if image_set_length(images_path) == 0:
        raise ArtifactError(f"{images_path}: no synthetic images to audit")
    model, _ = load_model(lanet_path, expect_images=images_path)
    device = default_device()
    model.to(device).eval()
    real = {"test": RealSet(test_path, model, device), "train": RealSet(train_path, model, device)}
    for reference in real.values():
        if tuple(reference.shape) != image_set_shape(images_path):
            raise ArtifactError(f"{images_path}: images of shape {image_set_shape(images_path)} cannot be compared "
                                f"with {reference.path}'s {tuple(reference.shape)}")
    arrays = {**audit_arrays(images_path, real, model, device), **reference_arrays(real)}
    flags = {f"{name}_duplicate": arrays[f"{name}_{FLAG_SPACE}_distance"] <= thresholds[name] for name in REAL_SETS}
    attrs = provenance("audit", {"test_threshold": thresholds["test"], "train_threshold": thresholds["train"],
                                 "flag_space": FLAG_SPACE}, dataset=dataset_of(images_path))
    write_arrays(out_path, attrs, **arrays, **flags)
    table = audit_table(arrays, real, thresholds, generator)
    write_csv(table, out_csv)
    plot_audit(images_path, test_path, arrays, thresholds, generator, out_png)
    log.info("%s: %d of %d synthetic images within %.3g (rms) of a test image, %d within %.3g of a training image",
             generator, flags["test_duplicate"].sum(), len(flags["test_duplicate"]), thresholds["test"],
             flags["train_duplicate"].sum(), thresholds["train"])
    return table


def plot_audit(images_path, test_path, arrays: dict, thresholds: dict, generator: str, out_png) -> None:
    """The N_CLOSEST synthetic images closest to a test image (rms), each beside that test image,
    and per space the histograms of the nearest-test and nearest-training distances of the
    synthetic images with the real reference (real test to training)."""
    from .reporting import figure_axes, save_figure

    distance, index = arrays["test_rms_distance"], arrays["test_rms_index"]
    closest = np.argsort(distance, kind="stable")[:N_CLOSEST]
    pair_columns = 8
    pair_rows = -(-2 * len(closest) // pair_columns)
    figure, axes = figure_axes(pair_rows + 2, pair_columns, figsize=(pair_columns * 1.1, pair_rows * 1.15 + 3.4),
                               squeeze=False)
    with open_hdf5(images_path) as synthetic, open_hdf5(test_path) as test:
        pairs = [(synthetic["images"][i], f"syn {i}\nrms {distance[i]:.3f}") for i in closest]
        pairs = [item for (image, caption), j in zip(pairs, index[closest])
                 for item in ((image, caption), (test["images"][j], f"test {j}"))]
    for axis, (image, caption) in zip(axes[:pair_rows].flat, pairs):
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
        axis.set_title(caption, fontsize=6)
    for axis in axes.flat:
        axis.axis("off")
    grid = axes[pair_rows, 0].get_gridspec()
    for axis in axes[pair_rows:].flat:
        axis.remove()
    spans = np.array_split(np.arange(pair_columns), len(SPACES))
    for space, span in zip(SPACES, spans):
        axis = figure.add_subplot(grid[pair_rows:, span[0]:span[-1] + 1])
        series = {"synthetic to test": arrays[f"test_{space}_distance"],
                  "synthetic to train": arrays[f"train_{space}_distance"],
                  "real test to train": arrays[f"real_test_to_train_{space}_distance"]}
        low = min(0.0, *(float(v.min()) for v in series.values()))  # a cosine distance can round below 0
        bins = np.linspace(low, max(float(v.max()) for v in series.values()) * 1.02 + 1e-9, 40)
        for label, values in series.items():
            axis.hist(values, bins=bins, density=True, histtype="step", label=label)
        if space == FLAG_SPACE:
            axis.axvline(thresholds["test"], color="red", linestyle=":", label="test threshold")
            axis.axvline(thresholds["train"], color="black", linestyle="--", label="train threshold")
        axis.set_xlabel(f"nearest-neighbour distance ({space})", fontsize=7)
        axis.tick_params(labelsize=6)
        axis.legend(fontsize=5)
    n_flagged = int((distance <= thresholds["test"]).sum())
    figure.suptitle(f"{generator}: the {len(closest)} synthetic images closest to a test image (beside it); "
                    f"{n_flagged} of {len(distance)} within rms {thresholds['test']:g}", fontsize=8)
    save_figure(figure, out_png, dpi=110)
