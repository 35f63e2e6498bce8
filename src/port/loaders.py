"""Batches for training: real images from memory (on the GPU when there is one), synthetic
images streamed from HDF5.

Synthetic sets can be far larger than memory (10M CIFAR images are 30 GB), and h5py
fancy indexing per image is thousands of times slower than reading whole chunks. The
stream therefore reads whole chunks in a random order, pools a few of them in a buffer,
and shuffles inside the buffer (WebDataset/FFCV style), reading the next buffer in a
background thread. The stream runs on across epochs, one full pass over the set before any
image repeats, and batch b is a pure function of (seed, b), so a resumed run sees exactly
the batches it would have seen.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .artifacts import open_hdf5
from .errors import ArtifactError
from .seeds import rng


def to_tensor(images) -> torch.Tensor:
    """uint8 NHWC (numpy, or a tensor on any device) -> float NCHW in [0, 1], channels-last in memory
    (the fast layout for our convolutions). With three channels that memory is not contiguous NCHW:
    code outside the package that flattens with `.view` (pyautoattack, diffusers' attention) must
    get `.contiguous()`."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    return x.permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=torch.channels_last)


def augment(x: torch.Tensor, generator: torch.Generator, crop_padding: int = 0, flip: bool = False):
    """Random crop after zero padding, and random horizontal flip (the CIFAR recipe), on x's device.
    The offsets and flips are drawn from the CPU `generator`, so they do not depend on the device."""
    n, _, h, w = x.shape
    if crop_padding:
        padded = torch.nn.functional.pad(x, [crop_padding] * 4)
        dy = torch.randint(0, 2 * crop_padding + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * crop_padding + 1, (n,), generator=generator).to(x.device)
        rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        x = padded.gather(2, rows.expand(n, x.shape[1], h, w + 2 * crop_padding))
        cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        x = x.gather(3, cols.expand(n, x.shape[1], h, w))
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
    return x.contiguous(memory_format=torch.channels_last)


class ArrayBatches:
    """Shuffled fixed-size batches over arrays held in memory; one pass per epoch.

    The arrays live on `device` as uint8 (a CUDA set is copied there once, so batches need no
    host work beyond the index permutation); batches are (uint8 NHWC, int64 labels) tensors there.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, device="cpu"):
        if len(images) < batch_size:
            raise ArtifactError(f"{len(images)} real training images are fewer than one batch of {batch_size}")
        self.device = torch.device(device)
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device)
        self.batch_size, self.seed = batch_size, seed

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = rng(self.seed, "real", epoch).permutation(len(self.images))
        for i in range(len(self)):
            idx = torch.from_numpy(np.sort(order[i * self.batch_size:(i + 1) * self.batch_size])).to(self.device)
            yield self.images[idx], self.labels[idx]


class ChunkShuffleStream:
    """An endless stream of shuffled batches from an HDF5 image set, in bounded memory.

    The stream is a sequence of passes over the set. Pass p visits the chunks in an order drawn
    from (seed, p), `buffer_chunks` at a time; each such group of chunks is pooled and shuffled
    (from (seed, p, group)). Batches are consecutive slices of that sequence, so batch b is a pure
    function of (seed, b), epoch e starts at batch e * `steps_per_epoch` (default: one pass), and
    every image is seen once per pass. Memory holds two groups (the current one and the next,
    read by a background thread) plus a batch, whatever the file size. With `pin_memory`, batches
    land in page-locked memory, so the copy to the GPU overlaps the training step.
    """

    def __init__(self, path, batch_size: int, seed: int, buffer_chunks: int = 16, steps_per_epoch: int | None = None,
                 pin_memory: bool = False):
        self.path, self.batch_size, self.seed, self.buffer_chunks = Path(path), batch_size, seed, buffer_chunks
        self.pin_memory = pin_memory
        with open_hdf5(self.path) as handle:
            if "images" not in handle or "labels" not in handle:
                raise ArtifactError(f"{self.path}: needs 'images' and 'labels' to train on")
            images = handle["images"]
            self.length, self.image_shape = images.shape[0], images.shape[1:]
            self.chunk = images.chunks[0] if images.chunks else 1024
        if self.length < batch_size:
            raise ArtifactError(f"{self.path}: {self.length} images are fewer than one batch of {batch_size}")
        self.steps_per_epoch = steps_per_epoch or self.length // batch_size

    def images_used(self, steps: int) -> int:
        """Distinct images in the first `steps` batches (every pass is a permutation of the set)."""
        return min(self.length, steps * self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The stream from the first batch of `epoch` on (it runs into the next epochs)."""
        return self.batches(epoch * self.steps_per_epoch)

    def _groups(self, pass_index: int) -> list[np.ndarray]:
        """The chunk starts of each group of one pass, in reading order."""
        order = rng(self.seed, "synthetic", pass_index).permutation(np.arange(0, self.length, self.chunk))
        return [np.sort(order[g:g + self.buffer_chunks]) for g in range(0, len(order), self.buffer_chunks)]

    def _group_size(self, starts: np.ndarray) -> int:
        return int(np.minimum(self.chunk, self.length - starts).sum())

    def _read_group(self, handle, pass_index: int, group: int, starts: np.ndarray):
        """One group's images and labels, whole chunks read in file order, and its shuffle."""
        x = np.empty((self._group_size(starts), *self.image_shape), dtype=np.uint8)
        y = np.empty(len(x), dtype=np.int64)
        at = 0
        for start in starts:
            stop = min(start + self.chunk, self.length)
            handle["images"].read_direct(x, np.s_[start:stop], np.s_[at:at + stop - start])
            y[at:at + stop - start] = handle["labels"][start:stop]
            at += stop - start
        return x, y, rng(self.seed, "synthetic", pass_index, group).permutation(len(x))

    def _gather(self, pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """One batch from (images, labels, index) pieces, into pinned memory when asked."""
        shape = (self.batch_size, *self.image_shape)
        x = (torch.empty(shape, dtype=torch.uint8, pin_memory=True).numpy() if self.pin_memory
             else np.empty(shape, dtype=np.uint8))
        y = np.empty(self.batch_size, dtype=np.int64)
        at = 0
        for images, labels, index in pieces:
            np.take(images, index, axis=0, out=x[at:at + len(index)])
            y[at:at + len(index)] = labels[index]
            at += len(index)
        return x, y

    def batches(self, step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The endless stream of batches from global batch `step` on."""
        pass_index, skip = divmod(step * self.batch_size, self.length)
        groups = self._groups(pass_index)
        group = 0
        while skip >= self._group_size(groups[group]):  # the group holding the first image
            skip -= self._group_size(groups[group])
            group += 1
        with open_hdf5(self.path) as handle, ThreadPoolExecutor(max_workers=1) as reader:
            ahead = reader.submit(self._read_group, handle, pass_index, group, groups[group])
            pieces, filled = [], 0
            while True:
                images, labels, perm = ahead.result()
                group += 1
                if group == len(groups):
                    pass_index, group = pass_index + 1, 0
                    groups = self._groups(pass_index)
                ahead = reader.submit(self._read_group, handle, pass_index, group, groups[group])
                position, skip = skip, 0
                while position < len(perm):
                    take = np.sort(perm[position:position + self.batch_size - filled])
                    position += len(take)
                    pieces.append((images, labels, take))
                    filled += len(take)
                    if filled == self.batch_size:
                        yield self._gather(pieces)
                        pieces, filled = [], 0
                # a batch straddling two groups keeps its few images, not the whole finished group
                pieces = [(x[index], y[index], np.arange(len(index))) for x, y, index in pieces]
                del images, labels, perm
