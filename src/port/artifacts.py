"""One artifact convention for every stage: HDF5 image sets, tidy CSV, torch checkpoints.

Every write goes to a temporary file beside the target and is renamed into place only
when complete, so a killed job never leaves a file that looks finished. Every HDF5 file
carries its provenance (stage, parameter hash, seed, package versions) as attributes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Iterator, Mapping

import h5py
import numpy as np
import pandas as pd

CHUNK_IMAGES = 1024  # images per HDF5 chunk: whole-chunk reads stay fast and memory-bounded
_PACKAGES = ("port-pipeline", "torch", "numpy", "h5py", "diffusers", "snakemake")


class ArtifactError(ValueError):
    """A stage input or output that is missing, malformed or inconsistent."""


def settings_hash(settings: Mapping) -> str:
    """Stable short hash of a stage's settings (key order does not matter)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def provenance(stage: str, settings: Mapping | None = None, seed: int | None = None, **extra) -> dict:
    """Attributes stored on every HDF5 artifact."""
    attrs = {
        "stage": stage,
        "params_hash": settings_hash(settings or {}),
        "params": json.dumps(settings or {}, sort_keys=True, default=str),
        "versions": json.dumps(package_versions(), sort_keys=True),
    }
    if seed is not None:
        attrs["seed"] = int(seed)
    attrs.update({k: v for k, v in extra.items() if v is not None})
    return attrs


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        umask = os.umask(0o022)  # the umask can only be read by setting it
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    if not Path(path).is_file():
        raise ArtifactError(f"{path}: file not found")
    return pd.read_csv(path)


def save_torch(obj, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | os.PathLike) -> dict:
    """Load a checkpoint without unpickling arbitrary objects."""
    import torch

    if not Path(path).is_file():
        raise ArtifactError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise ArtifactError(f"{path}: not a readable checkpoint ({err})") from err


class ImageWriter:
    """Append batches to a chunked uint8 NHWC `images` dataset, plus aligned 1-D/2-D arrays.

    Used as a context manager: the file appears at `path` only if the block completes.
    """

    def __init__(self, path: str | os.PathLike, image_shape: tuple[int, int, int], attrs: Mapping,
                 chunk_images: int = CHUNK_IMAGES):
        self.path = Path(path)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.attrs = dict(attrs)
        self.chunk_images = chunk_images
        self._stack = contextlib.ExitStack()
        self._file: h5py.File | None = None
        self.count = 0

    def __enter__(self) -> "ImageWriter":
        try:
            tmp = self._stack.enter_context(atomic_path(self.path))
            self._file = self._stack.enter_context(h5py.File(tmp, "w"))
            self._file.create_dataset(
                "images", shape=(0, *self.image_shape), maxshape=(None, *self.image_shape),
                dtype=np.uint8, chunks=(self.chunk_images, *self.image_shape),
            )
            for key, value in self.attrs.items():
                self._file.attrs[key] = value
        except BaseException:
            # `with` calls __exit__ only after a successful __enter__: close the file and
            # remove the temporary file here, or it would outlive the failed write.
            self._stack.__exit__(*sys.exc_info())
            raise
        return self

    def append(self, images: np.ndarray, **arrays: np.ndarray) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
            raise ArtifactError(
                f"{self.path}: expected uint8 images of shape (N, {', '.join(map(str, self.image_shape))}), "
                f"got {images.dtype} {images.shape}")
        n = len(images)
        start = self.count
        self._grow("images", images, start)
        for key, values in arrays.items():
            values = np.asarray(values)
            if len(values) != n:
                raise ArtifactError(f"{self.path}: '{key}' has {len(values)} rows for {n} images")
            if key not in self._file:
                self._file.create_dataset(
                    key, shape=(0, *values.shape[1:]), maxshape=(None, *values.shape[1:]),
                    dtype=values.dtype, chunks=(self.chunk_images, *values.shape[1:]))
            self._grow(key, values, start)
        self.count += n

    def _grow(self, key: str, values: np.ndarray, start: int) -> None:
        dataset = self._file[key]
        dataset.resize(start + len(values), axis=0)
        dataset[start:start + len(values)] = values

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)


def write_images(path, images: np.ndarray, attrs: Mapping, **arrays: np.ndarray) -> None:
    """Write a whole image set at once (see ImageWriter)."""
    images = np.asarray(images)
    with ImageWriter(path, images.shape[1:], attrs) as writer:
        writer.append(images, **arrays)


def write_arrays(path, attrs: Mapping, **arrays: np.ndarray) -> None:
    """Write per-image arrays without images (labels, probabilities, masks, scores)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        for key, values in arrays.items():
            values = np.asarray(values)
            chunks = (min(CHUNK_IMAGES, max(len(values), 1)), *values.shape[1:]) if values.ndim else None
            handle.create_dataset(key, data=values, chunks=chunks)
        for key, value in attrs.items():
            handle.attrs[key] = value


def _open(path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ArtifactError(f"{path}: not a readable HDF5 file ({err})") from err


def read_arrays(path, *keys: str) -> dict[str, np.ndarray]:
    """Read named per-image arrays in full (small metadata: labels, masks, probabilities)."""
    with _open(path) as handle:
        missing = [k for k in keys if k not in handle]
        if missing:
            raise ArtifactError(f"{path}: missing dataset(s) {', '.join(missing)}")
        return {k: handle[k][()] for k in keys}


def read_attrs(path) -> dict:
    with _open(path) as handle:
        return dict(handle.attrs)


def dataset_of(path) -> str | None:
    """The dataset name an artifact descends from, carried down the chain of stages."""
    value = read_attrs(path).get("dataset")
    return None if value is None else str(value)


def validate_image_set(path, num_classes: int | None = None, require_labels: bool = True,
                       image_shape: tuple | None = None) -> int:
    """Check an image set's structure cheaply (no full read of images). Returns N."""
    with _open(path) as handle:
        if "images" not in handle:
            raise ArtifactError(f"{path}: no 'images' dataset")
        images = handle["images"]
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ArtifactError(f"{path}: 'images' must be uint8 NHWC, got {images.dtype} {images.shape}")
        if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
            raise ArtifactError(f"{path}: images have shape {images.shape[1:]}, expected {tuple(image_shape)}")
        n = images.shape[0]
        if "labels" in handle:
            labels = handle["labels"][()]
            if len(labels) != n:
                raise ArtifactError(f"{path}: {n} images but {len(labels)} labels")
            check_labels(labels, num_classes, path)
        elif require_labels:
            raise ArtifactError(f"{path}: no 'labels' dataset")
        return n


def check_labels(labels: np.ndarray, num_classes: int | None, source) -> None:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ArtifactError(f"{source}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if num_classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ArtifactError(
            f"{source}: labels must lie in [0, {num_classes - 1}], found {labels.min()}..{labels.max()}")


def read_image_set(path, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a (small, real) labelled image set fully into memory."""
    validate_image_set(path, num_classes)
    with _open(path) as handle:
        return handle["images"][()], handle["labels"][()].astype(np.int64)


def image_set_length(path) -> int:
    with _open(path) as handle:
        if "images" not in handle:
            raise ArtifactError(f"{path}: no 'images' dataset")
        return handle["images"].shape[0]


def iter_image_blocks(path, block: int = CHUNK_IMAGES, start: int = 0, stop: int | None = None):
    """Yield (offset, uint8 images) in order, one contiguous block at a time, over [start, stop)."""
    with _open(path) as handle:
        images = handle["images"]
        stop = images.shape[0] if stop is None else min(stop, images.shape[0])
        for offset in range(start, stop, block):
            yield offset, images[offset:min(offset + block, stop)]


def copy_image_subset(source, writer: "ImageWriter", mask: np.ndarray, **per_image: np.ndarray) -> int:
    """Append the images of `source` where `mask` is true to `writer`, block by block (bounded
    memory), with `per_image` arrays (indexed by global image index) and their source_index."""
    copied = 0
    for offset, block in iter_image_blocks(source):
        take = mask[offset:offset + len(block)]
        if take.any():
            index = offset + np.flatnonzero(take)
            writer.append(block[take], source_index=index, **{k: v[index] for k, v in per_image.items()})
            copied += len(index)
    return copied
