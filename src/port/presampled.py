"""Pre-sampled synthetic sets (the public 20M/50M CIFAR-10 sets ship as several npz parts), read
range by range so that a shard job's memory follows the shard, not the set.

A part is an `.npz` archive (keys `image`, `label` by default) or a pair of `.npy` files. `.npy`
files are opened with `mmap_mode="r"`; an npz member is read through its zip stream from the
row offset after its `.npy` header. Only headers are read to check a set (dtype, rank, lengths),
so opening a 50M-image set costs nothing.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ArtifactError

READ_BLOCK_BYTES = 4 << 20  # rows read per step: bounded memory whatever the shard size


@dataclass
class StoredArray:
    """One array of a part: a `.npy` file, or the member `key` of an `.npz` archive."""

    path: Path
    key: str | None
    shape: tuple
    dtype: np.dtype

    @property
    def where(self) -> str:
        return f"{self.path}: '{self.key}'" if self.key is not None else f"{self.path}"

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def blocks(self, start: int, stop: int, rows: int):
        """Yield consecutive row blocks of [start, stop), at most `rows` rows each."""
        if self.key is None:
            mapped = np.load(self.path, mmap_mode="r")
            for offset in range(start, stop, rows):
                yield np.array(mapped[offset:min(offset + rows, stop)])
            return
        with zipfile.ZipFile(self.path) as archive, archive.open(f"{self.key}.npy") as member:
            _read_header(member, self.where, archive.getinfo(f"{self.key}.npy").file_size)
            skip = start * self.row_bytes
            while skip:  # read forward in bounded steps (a zip stream seeks by reading)
                skip -= len(member.read(min(skip, READ_BLOCK_BYTES)))
            for offset in range(start, stop, rows):
                count = min(rows, stop - offset)
                data = member.read(count * self.row_bytes)
                yield np.frombuffer(data, dtype=self.dtype).reshape(count, *self.shape[1:])


def read_npy_header(handle, where: str, size: int) -> tuple[tuple, bool, np.dtype]:
    """(shape, fortran_order, dtype) from the `.npy` header at the start of `handle`, a file or
    npz member of `size` bytes. A header claiming more data than follows it is refused here:
    reading would otherwise stop short inside a job, or ask numpy for terabytes (MemoryError)."""
    try:
        version = np.lib.format.read_magic(handle)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = reader(handle)
    except (ValueError, EOFError) as err:
        raise ArtifactError(f"{where}: not a readable .npy array ({err})") from err
    claimed, held = math.prod(shape) * dtype.itemsize, size - handle.tell()
    if claimed > held and not dtype.hasobject:  # an object array's data is a pickle, of any length (refused anyway)
        raise ArtifactError(f"{where}: the .npy header claims {dtype} {tuple(shape)} ({claimed} bytes), but only "
                            f"{held} bytes follow it")
    return tuple(shape), fortran_order, dtype


def _read_header(handle, where: str, size: int) -> tuple[tuple, np.dtype]:
    shape, fortran_order, dtype = read_npy_header(handle, where, size)
    if fortran_order or dtype.hasobject:
        raise ArtifactError(f"{where}: Fortran-ordered or object arrays are not supported")
    return shape, dtype


def open_stored_array(path, key: str | None) -> StoredArray:
    """The header of a `.npy` file (key None) or of member `key` of an `.npz` archive."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    if key is None:
        with open(path, "rb") as handle:
            shape, dtype = _read_header(handle, str(path), path.stat().st_size)
        return StoredArray(path, None, shape, dtype)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n.removesuffix(".npy") for n in archive.namelist()]
            if key not in names:
                raise ArtifactError(f"{path}: no key '{key}' (keys: {', '.join(names)})")
            with archive.open(f"{key}.npy") as member:
                shape, dtype = _read_header(member, f"{path}: '{key}'", archive.getinfo(f"{key}.npy").file_size)
    except zipfile.BadZipFile as err:
        raise ArtifactError(f"{path}: not an npz of arrays ({err})") from err
    return StoredArray(path, key, shape, dtype)


def _part_arrays(part, image_key: str, label_key: str | None) -> tuple[StoredArray, StoredArray | None]:
    if isinstance(part, dict):  # a pair of .npy files
        labels = part.get("label")
        return open_stored_array(part["image"], None), (open_stored_array(labels, None) if labels else None)
    return open_stored_array(part, image_key), (open_stored_array(part, label_key) if label_key else None)


@dataclass
class PresampledSet:
    """The parts of a pre-sampled set, checked from their headers, read by global image range."""

    parts: list[tuple[StoredArray, StoredArray | None]]

    @classmethod
    def open(cls, parts, image_key: str = "image", label_key: str | None = "label") -> "PresampledSet":
        parts = [parts] if isinstance(parts, (str, Path, dict)) else list(parts)
        opened = [_part_arrays(part, image_key, label_key) for part in parts]
        for images, labels in opened:
            if images.dtype != np.uint8 or len(images.shape) != 4 or images.shape[-1] not in (1, 3):
                raise ArtifactError(f"{images.where}: images must be uint8 (N, H, W, C) with C in (1, 3), "
                                    f"got {images.dtype} {images.shape}")
            if images.shape[1:] != opened[0][0].shape[1:]:
                raise ArtifactError(f"{images.where}: images of shape {images.shape[1:]}, the first part has "
                                    f"{opened[0][0].shape[1:]}")
            if labels is not None:
                if len(labels.shape) != 1 or not np.issubdtype(labels.dtype, np.integer):
                    raise ArtifactError(f"{labels.where}: labels must be a 1-D integer array, "
                                        f"got {labels.dtype} {labels.shape}")
                if labels.shape[0] != images.shape[0]:
                    raise ArtifactError(f"{labels.where}: {labels.shape[0]} labels for the {images.shape[0]} "
                                        f"images of {images.where}")
        unlabelled = [images.where for images, labels in opened if labels is None]
        if unlabelled and len(unlabelled) < len(opened):
            raise ArtifactError(f"{unlabelled[0]}: no labels while other parts of the set have them")
        return cls(opened)

    @property
    def image_shape(self) -> tuple:
        return self.parts[0][0].shape[1:]

    @property
    def has_labels(self) -> bool:
        return self.parts[0][1] is not None

    def __len__(self) -> int:
        return sum(images.shape[0] for images, _ in self.parts)

    def blocks(self, start: int, stop: int, num_classes: int | None = None):
        """Yield (images, labels or None) blocks of global images [start, stop), part by part."""
        offset = 0
        for images, labels in self.parts:
            lo, hi = max(start - offset, 0), min(stop - offset, images.shape[0])
            if lo < hi:
                rows = max(1, READ_BLOCK_BYTES // max(images.row_bytes, 1))
                label_blocks = labels.blocks(lo, hi, rows) if labels is not None else None
                for block in images.blocks(lo, hi, rows):
                    label_block = next(label_blocks).astype(np.int64) if label_blocks is not None else None
                    if label_block is not None and len(label_block) and (
                            label_block.min() < 0 or (num_classes is not None and label_block.max() >= num_classes)):
                        limit = f"[0, {num_classes - 1}]" if num_classes is not None else "[0, inf)"
                        raise ArtifactError(f"{labels.where}: labels must lie in {limit}, found "
                                            f"{label_block.min()}..{label_block.max()}")
                    yield block, label_block
            offset += images.shape[0]
