"""Batches for training: real images from memory, synthetic images streamed from HDF5.

Synthetic sets can be far larger than memory (10M CIFAR images are 30 GB), and h5py
fancy indexing per image is thousands of times slower than reading whole chunks. The
stream therefore reads whole chunks in a random order, pools a few of them in a buffer,
and shuffles inside the buffer (WebDataset/FFCV style). Every epoch's order is a pure
function of (seed, epoch), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import torch

from .artifacts import ArtifactError
from .seeds import derive_seed, rng


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1], channels-last in memory (the fast layout for our
    convolutions). With three channels that memory is not contiguous NCHW: code outside the package
    that flattens with `.view` (pyautoattack, diffusers' attention) must get `.contiguous()`."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def augment(x: torch.Tensor, generator: torch.Generator, crop_padding: int = 0, flip: bool = False):
    """Random crop after zero padding, and random horizontal flip (the CIFAR recipe)."""
    n, _, h, w = x.shape
    if crop_padding:
        padded = torch.nn.functional.pad(x, [crop_padding] * 4)
        dy = torch.randint(0, 2 * crop_padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * crop_padding + 1, (n,), generator=generator)
        rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * crop_padding)
        x = padded.gather(2, rows)
        cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
        x = x.gather(3, cols)
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
    return x.contiguous(memory_format=torch.channels_last)


class ArrayBatches:
    """Shuffled fixed-size batches over arrays held in memory; one pass per epoch."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
        if len(images) < batch_size:
            raise ArtifactError(f"{len(images)} real training images are fewer than one batch of {batch_size}")
        self.images, self.labels, self.batch_size, self.seed = images, labels, batch_size, seed

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = rng(self.seed, "real", epoch).permutation(len(self.images))
        for i in range(len(self)):
            idx = np.sort(order[i * self.batch_size:(i + 1) * self.batch_size])
            yield self.images[idx], self.labels[idx]


class ChunkShuffleStream:
    """An endless stream of shuffled batches from an HDF5 image set, in bounded memory.

    Memory holds at most `buffer_chunks` chunks plus one batch, whatever the file size.
    """

    def __init__(self, path, batch_size: int, seed: int, buffer_chunks: int = 16):
        self.path, self.batch_size, self.seed, self.buffer_chunks = Path(path), batch_size, seed, buffer_chunks
        with h5py.File(self.path, "r") as handle:
            if "images" not in handle or "labels" not in handle:
                raise ArtifactError(f"{self.path}: needs 'images' and 'labels' to train on")
            images = handle["images"]
            self.length = images.shape[0]
            self.chunk = images.chunks[0] if images.chunks else 1024
        if self.length < batch_size:
            raise ArtifactError(f"{self.path}: {self.length} images are fewer than one batch of {batch_size}")

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        generator = np.random.default_rng(derive_seed(self.seed, "synthetic", epoch))
        starts = np.arange(0, self.length, self.chunk)
        pending_x = np.empty((0,), dtype=np.uint8)
        pending_y = np.empty((0,), dtype=np.int64)
        with h5py.File(self.path, "r") as handle:
            images, labels = handle["images"], handle["labels"]
            while True:
                order = generator.permutation(starts)
                for group in range(0, len(order), self.buffer_chunks):
                    blocks = [(images[s:s + self.chunk], labels[s:s + self.chunk])
                              for s in np.sort(order[group:group + self.buffer_chunks])]
                    xs = [pending_x] if len(pending_x) else []
                    ys = [pending_y] if len(pending_y) else []
                    buffer_x = np.concatenate(xs + [b[0] for b in blocks])
                    buffer_y = np.concatenate(ys + [b[1] for b in blocks]).astype(np.int64)
                    del blocks, xs, ys
                    perm = generator.permutation(len(buffer_x))
                    usable = len(perm) - len(perm) % self.batch_size
                    for i in range(0, usable, self.batch_size):
                        idx = np.sort(perm[i:i + self.batch_size])
                        yield buffer_x[idx], buffer_y[idx]
                    pending_x, pending_y = buffer_x[perm[usable:]], buffer_y[perm[usable:]]
                    del buffer_x, buffer_y
