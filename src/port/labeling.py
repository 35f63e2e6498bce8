"""Pseudo-labels from two labelers (the paper's LaNet and SplitNet slots) and the filter.

The pseudo-label is the `lanet` prediction, or the generator's own class for a conditional
generator configured with `labels_from: generator` (both labelers' predictions are kept, and the
filter counts report how often lanet agrees with the generator). An image is discarded when the two labelers
disagree AND both are unsure (confidence below the threshold, 0.9 in the paper).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .artifacts import (SOURCE_LABELS, atomic_path, check_labels, dataset_of, image_set_length, iter_image_blocks,
                        open_hdf5, provenance, read_arrays, read_attrs, read_image_set, write_arrays, write_csv)
from .errors import ArtifactError, SettingsError
from .compute import Compute
from .settings.labeling import LABEL_SOURCES
from .devices import default_device
from .evaluation import predict
from .loaders import to_tensor
from .models import load_model
from .shards import shard_bounds
from .training import train

log = logging.getLogger(__name__)
SLOTS = ("lanet", "splitnet")


def prepare_labeler(*, slot: str, train_path, test_path, model_out, metrics_out, history_out, checkpoint_path,
                    settings: dict, seed: int) -> float:
    """Train a labeler on the real training set (or take a given checkpoint); record test accuracy."""
    num_classes = int(read_attrs(train_path)["num_classes"])
    given = settings.get("checkpoint")
    if given:
        load_model(given, expect_arch=settings["arch"], expect_classes=num_classes, expect_images=train_path)
        with atomic_path(model_out) as tmp:
            shutil.copyfile(given, tmp)
        write_csv(pd.DataFrame(columns=["epoch"]), history_out)
    else:
        train_settings = {k: v for k, v in settings.items() if k != "checkpoint"}
        train(train_path=train_path, model_out=model_out, history_out=history_out, checkpoint_path=checkpoint_path,
              settings=train_settings, seed=seed, settings_key=f"datasets.{dataset_of(train_path)}.labelers.{slot}")
    model, _ = load_model(model_out, expect_classes=num_classes, expect_images=test_path)
    device = default_device()
    images, labels = read_image_set(test_path, num_classes)
    test_acc = (predict(model.to(device), to_tensor(images).to(device)).cpu().numpy() == labels).mean()
    log.info("%s test accuracy %.4f", slot, test_acc)
    write_csv(pd.DataFrame([dict(slot=slot, arch=settings["arch"], source=given or "trained",
                                 test_acc=float(test_acc), n_test=len(labels))]), metrics_out)
    return float(test_acc)


def class_probabilities(model, images_path, num_classes: int, start: int = 0, stop: int | None = None,
                        batch: int = 1024, progress: bool = True, compute: Compute | None = None) -> np.ndarray:
    """Softmax outputs for images [start, stop) of an image set (an empty shard gives 0 rows);
    `compute` runs the forward passes in bf16 on CUDA (None: fp32)."""
    stop = image_set_length(images_path) if stop is None else stop
    device = default_device()
    model.to(device)
    compute = compute or Compute("fp32")
    forward, autocast = compute.compiled(model), compute.autocast(device)
    probs = [np.zeros((0, num_classes), np.float32)]
    with torch.inference_mode(), autocast:
        for _, block in tqdm(iter_image_blocks(images_path, batch, start, stop), total=-(-(stop - start) // batch),
                             desc=f"label {Path(images_path).name}", disable=not progress, mininterval=10):
            logits = forward(to_tensor(block).to(device, non_blocking=True))
            probs.append(torch.softmax(logits.float(), 1).cpu().numpy())
    return np.concatenate(probs)


def generator_labels(images_path, start: int, stop: int, num_classes: int) -> np.ndarray | None:
    """The generator's own classes of images [start, stop), or None for an unconditional set."""
    with open_hdf5(images_path) as handle:
        if SOURCE_LABELS not in handle:
            return None
        labels = handle[SOURCE_LABELS][start:stop]
    check_labels(labels, num_classes, f"{images_path}: '{SOURCE_LABELS}'")
    return labels.astype(np.int64)


def pseudo_label(*, images_path, lanet_path, splitnet_path, out_path, shard: int = 0, n_shards: int = 1,
                 labels_from: str = "lanet", progress: bool = True, batch_size: int = 1024,
                 compute: dict | None = None) -> None:
    """Store both labelers' class probabilities, the generator's labels when the set has them,
    and the pseudo-label (lanet's argmax, or the generator's class with labels_from generator)
    for one shard of the image set (merged afterwards with port.shards.merge_array_shards);
    `batch_size` images per forward pass, run as the `compute` block says (bf16 on CUDA by default)."""
    if labels_from not in LABEL_SOURCES:
        raise SettingsError(f"labels_from '{labels_from}' (known: {', '.join(LABEL_SOURCES)})")
    start, stop = shard_bounds(image_set_length(images_path), n_shards, shard)
    lanet, spec = load_model(lanet_path, expect_images=images_path)
    num_classes = spec["num_classes"]
    splitnet, _ = load_model(splitnet_path, expect_classes=num_classes, expect_images=images_path)
    source = generator_labels(images_path, start, stop, num_classes)
    if labels_from == "generator" and source is None:
        raise ArtifactError(f"{images_path}: labels_from generator, but the image set has no '{SOURCE_LABELS}' "
                            "(an unconditional generator or an npz set without labels)")
    probs = {slot: class_probabilities(model, images_path, num_classes, start, stop, batch_size, progress,
                                       Compute.from_settings(compute))
             for slot, model in zip(SLOTS, (lanet, splitnet))}
    attrs = provenance("pseudo_label", {"num_classes": num_classes, "labels_from": labels_from}, None,
                       images=str(images_path), dataset=dataset_of(images_path), shard=shard, image_offset=start,
                       image_stop=stop)
    labels = source if labels_from == "generator" else probs["lanet"].argmax(1).astype(np.int64)
    write_arrays(out_path, attrs, labels=labels, lanet_probs=probs["lanet"], splitnet_probs=probs["splitnet"],
                 **({SOURCE_LABELS: source} if source is not None else {}))


def generator_agreement(labels_path, lanet_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Per generator class, the fraction of its images that lanet also assigns to it: a quality
    signal of conditional generators (NaN without generator labels or images of the class)."""
    with open_hdf5(labels_path) as handle:
        if SOURCE_LABELS not in handle:
            return np.full(num_classes, np.nan)
        source = handle[SOURCE_LABELS][()]
    total = np.bincount(source, minlength=num_classes)
    agree = np.bincount(source[lanet_pred == source], minlength=num_classes)
    return np.where(total > 0, agree / np.maximum(total, 1), np.nan)


def keep_mask(pred_a, conf_a, pred_b, conf_b, threshold: float) -> np.ndarray:
    """The paper's rule: discard when the classes differ AND both confidences < threshold."""
    pred_a, pred_b = np.asarray(pred_a), np.asarray(pred_b)
    conf_a, conf_b = np.asarray(conf_a), np.asarray(conf_b)
    if np.isnan(conf_a).any() or np.isnan(conf_b).any():
        raise ArtifactError("labeler confidences contain NaN")
    return ~((pred_a != pred_b) & (conf_a < threshold) & (conf_b < threshold))


def filter_images(*, labels_path, out_mask, out_counts, threshold: float) -> int:
    """Write the keep mask (HDF5) and per-class counts (CSV); returns the number kept."""
    if not 0.0 <= threshold <= 1.0:
        raise SettingsError(f"filter threshold must lie in [0, 1], got {threshold}")
    arrays = read_arrays(labels_path, "labels", "lanet_probs", "splitnet_probs")
    a, b = arrays["lanet_probs"], arrays["splitnet_probs"]
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ArtifactError(f"{labels_path}: class probabilities contain NaN or Inf")
    keep = keep_mask(a.argmax(1), a.max(1), b.argmax(1), b.max(1), threshold)
    labels = arrays["labels"]
    attrs = provenance("filter", {"threshold": threshold}, dataset=dataset_of(labels_path))
    write_arrays(out_mask, attrs, keep=keep, labels=labels)
    classes = np.arange(a.shape[1])
    counts = pd.DataFrame({
        "class": classes,
        "n_total": np.bincount(labels, minlength=len(classes)),
        "n_kept": np.bincount(labels[keep], minlength=len(classes)),
    })
    counts["n_discarded"] = counts["n_total"] - counts["n_kept"]
    counts["kept_fraction"] = counts["n_kept"] / counts["n_total"].clip(lower=1)
    counts["generator_agreement"] = generator_agreement(labels_path, a.argmax(1), len(classes))
    write_csv(counts, out_counts)
    log.info("kept %d of %d synthetic images (threshold %.2f)", keep.sum(), len(keep), threshold)
    return int(keep.sum())
