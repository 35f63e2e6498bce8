"""Batches for training: the chunk-shuffle stream, in-memory batches and augmentation (port.loaders)."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
import torch

from port.artifacts import ImageWriter, provenance, write_arrays
from port.errors import ArtifactError
from port.loaders import ArrayBatches, ChunkShuffleStream, augment, to_tensor


def _identity_set(path, n, chunk, shape=(2, 2, 1)):
    """Image i encodes i in its first two pixels and has label i, so pairing can be checked."""
    ids = np.arange(n)
    images = np.zeros((n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0], flat[:, 1] = ids // 256, ids % 256
    with ImageWriter(path, shape, provenance("test"), chunk_images=chunk) as writer:
        for start in range(0, n, 300):
            writer.append(images[start:start + 300], labels=ids[start:start + 300])
    return path


def _decode(images):
    flat = np.asarray(images).reshape(len(images), -1).astype(np.int64)
    return flat[:, 0] * 256 + flat[:, 1]


@pytest.fixture(scope="module")
def identity_set(tmp_path_factory):
    return _identity_set(tmp_path_factory.mktemp("stream") / "ids.h5", n=1000, chunk=64)


# --- ChunkShuffleStream ------------------------------------------------------------------------

def test_stream_memory_stays_bounded(tmp_path):
    n, shape, chunk, batch = 20000, (32, 32, 3), 256, 128
    path = tmp_path / "big.h5"
    block = np.random.default_rng(0).integers(0, 256, size=(2000, *shape), dtype=np.uint8)
    with ImageWriter(path, shape, provenance("test"), chunk_images=chunk) as writer:
        for start in range(0, n, len(block)):
            writer.append(block, labels=np.arange(start, start + len(block)))
    del block
    file_bytes = path.stat().st_size
    assert file_bytes > 60e6

    stream = ChunkShuffleStream(path, batch_size=batch, seed=3, buffer_chunks=4)
    assert stream.chunk == chunk
    seen = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for images, labels in itertools.islice(stream.epoch(0), n // batch):
            assert images.shape == (batch, *shape) and labels.shape == (batch,)
            seen += len(labels)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == (n // batch) * batch
    # A buffer of 4 chunks is 3 MB; the whole file is 61 MB.
    assert peak < 15e6, f"peak {peak / 1e6:.1f} MB while streaming a {file_bytes / 1e6:.0f} MB file"


def test_stream_one_pass_yields_each_image_once(identity_set):
    n, batch = 1000, 30  # 1000 % 30 = 10 images carried over into the next pass
    stream = ChunkShuffleStream(identity_set, batch_size=batch, seed=11, buffer_chunks=3)
    batches = list(itertools.islice(stream.epoch(0), n // batch))
    ids = np.concatenate([labels for _, labels in batches])
    for images, labels in batches:
        assert labels.dtype == np.int64 and len(labels) == batch
        np.testing.assert_array_equal(_decode(images), labels)  # images stay paired with their labels
    assert len(ids) == len(np.unique(ids)) == n - n % batch
    assert ids.min() >= 0 and ids.max() < n
    assert not np.array_equal(ids, np.sort(ids))  # actually shuffled


def test_stream_is_endless_and_carries_the_remainder(identity_set):
    n, batch = 1000, 30
    stream = ChunkShuffleStream(identity_set, batch_size=batch, seed=11, buffer_chunks=3)
    batches = list(itertools.islice(stream.epoch(0), 3 * (n // batch) + 1))
    assert len(batches) == 3 * (n // batch) + 1
    first_pass = np.concatenate([y for _, y in batches[:n // batch]])
    rest = np.concatenate([y for _, y in batches[n // batch:]])
    leftover = np.setdiff1d(np.arange(n), first_pass)
    assert len(leftover) == n % batch
    assert np.isin(leftover, rest).all()
    counts = np.bincount(np.concatenate([first_pass, rest]), minlength=n)
    assert counts.min() >= 2 and counts.max() <= 4


def test_stream_is_a_function_of_seed_and_epoch(identity_set):
    def labels_of(seed, epoch, k=20):
        stream = ChunkShuffleStream(identity_set, batch_size=25, seed=seed, buffer_chunks=2)
        return np.stack([y for _, y in itertools.islice(stream.epoch(epoch), k)])

    same = labels_of(5, 2)
    np.testing.assert_array_equal(same, labels_of(5, 2))
    assert not np.array_equal(same, labels_of(5, 3))
    assert not np.array_equal(same, labels_of(6, 2))

    stream = ChunkShuffleStream(identity_set, batch_size=25, seed=5, buffer_chunks=2)
    first = next(stream.epoch(2))
    for images, labels in itertools.islice(stream.epoch(2), 1):  # a second iterator restarts the epoch
        np.testing.assert_array_equal(images, first[0])
        np.testing.assert_array_equal(labels, first[1])


def test_stream_continues_across_epochs(identity_set):
    """Issue 11, defect 5: an epoch shorter than the set must not restart the order. Five epochs of
    200 images over a 1000-image set see every image exactly once."""
    n, batch, steps = 1000, 25, 8
    stream = ChunkShuffleStream(identity_set, batch_size=batch, seed=5, buffer_chunks=3, steps_per_epoch=steps)
    ids = np.concatenate([y for epoch in range(5) for _, y in itertools.islice(stream.epoch(epoch), steps)])
    assert len(ids) == n and len(np.unique(ids)) == n
    assert stream.images_used(5 * steps) == n and stream.images_used(3) == 3 * batch
    assert stream.images_used(10**6) == n  # later passes repeat images, they add none


@pytest.mark.parametrize("epoch", [1, 4, 6])
def test_stream_resumes_at_any_epoch(identity_set, epoch):
    """Batch b is a pure function of (seed, b): a fresh stream started at an epoch (as a resumed run
    starts) gives what the stream started earlier gives there, across group and pass edges."""
    batch, steps = 30, 7
    stream = ChunkShuffleStream(identity_set, batch_size=batch, seed=2, buffer_chunks=3, steps_per_epoch=steps)
    run_on = list(itertools.islice(stream.epoch(0), (epoch + 1) * steps))[epoch * steps:]
    resumed = list(itertools.islice(stream.epoch(epoch), steps))
    for (x_a, y_a), (x_b, y_b) in zip(run_on, resumed, strict=True):
        np.testing.assert_array_equal(y_a, y_b)
        np.testing.assert_array_equal(x_a, x_b)
        np.testing.assert_array_equal(_decode(x_b), y_b)


def test_pinned_stream_gives_the_unpinned_batches_each_in_its_own_buffer(identity_set, monkeypatch):
    """With pin_memory (what training asks for on CUDA) every batch is gathered into a new torch
    buffer seen through numpy, so a batch still being copied to the GPU (non_blocking) is never
    overwritten by the next. Pinning needs a CUDA driver: here the page-locked allocation is asked
    for and made unpinned, and all the rest of the path runs. 40 batches of 30 cross a pass."""
    requests, empty = [], torch.empty

    def unpinned_empty(*args, pin_memory=False, **kwargs):
        requests.append(pin_memory)
        return empty(*args, **kwargs)

    expected = list(itertools.islice(ChunkShuffleStream(identity_set, 30, seed=3, buffer_chunks=3).epoch(1), 40))
    monkeypatch.setattr(torch, "empty", unpinned_empty)
    pinned = ChunkShuffleStream(identity_set, 30, seed=3, buffer_chunks=3, pin_memory=True)
    batches = list(itertools.islice(pinned.epoch(1), 40))  # all kept: a reused buffer would show
    assert requests == [True] * 40
    for (x, y), (x_expected, y_expected) in zip(batches, expected, strict=True):
        np.testing.assert_array_equal(x, x_expected)
        np.testing.assert_array_equal(y, y_expected)


def test_stream_every_pass_is_a_permutation(identity_set):
    n, batch = 1000, 40  # 25 batches a pass
    stream = ChunkShuffleStream(identity_set, batch_size=batch, seed=8, buffer_chunks=4)
    ids = np.concatenate([y for _, y in itertools.islice(stream.batches(0), 3 * n // batch)]).reshape(3, n)
    for one_pass in ids:
        assert len(np.unique(one_pass)) == n
    assert not np.array_equal(ids[0], ids[1])  # each pass its own order


def test_stream_refuses_small_or_unlabelled_sets(tmp_path, identity_set):
    with pytest.raises(ArtifactError, match="fewer than one batch"):
        ChunkShuffleStream(identity_set, batch_size=1001, seed=0)
    no_labels = tmp_path / "nolabels.h5"
    with ImageWriter(no_labels, (2, 2, 1), {}) as writer:
        writer.append(np.zeros((10, 2, 2, 1), dtype=np.uint8))
    with pytest.raises(ArtifactError, match="nolabels.h5"):
        ChunkShuffleStream(no_labels, batch_size=2, seed=0)
    no_images = tmp_path / "noimages.h5"
    write_arrays(no_images, {}, labels=np.zeros(10, dtype=np.int64))
    with pytest.raises(ArtifactError, match="noimages.h5"):
        ChunkShuffleStream(no_images, batch_size=2, seed=0)


# --- ArrayBatches ------------------------------------------------------------------------------

def _arrays(n=103):
    ids = np.arange(n)
    images = np.zeros((n, 2, 2, 1), dtype=np.uint8)
    images.reshape(n, -1)[:, 0], images.reshape(n, -1)[:, 1] = ids // 256, ids % 256
    return images, ids


def test_array_batches_one_permutation_per_epoch():
    images, labels = _arrays(103)
    batches = ArrayBatches(images, labels, batch_size=10, seed=4)
    assert len(batches) == 10
    epochs = []
    for epoch in range(3):
        got = list(batches.epoch(epoch))
        assert len(got) == len(batches)
        for x, y in got:
            assert len(y) == 10
            np.testing.assert_array_equal(_decode(x), y)
        ids = np.concatenate([y for _, y in got])
        assert len(np.unique(ids)) == 100  # no repeats; the last 3 (of a permutation) are dropped
        epochs.append(ids)
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    # Over three epochs different images are dropped: every image shows up somewhere.
    assert len(np.unique(np.concatenate(epochs))) > 100


def test_array_batches_deterministic():
    images, labels = _arrays(64)
    a = [y for _, y in ArrayBatches(images, labels, 8, seed=1).epoch(5)]
    b = [y for _, y in ArrayBatches(images, labels, 8, seed=1).epoch(5)]
    c = [y for _, y in ArrayBatches(images, labels, 8, seed=2).epoch(5)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(a), np.stack(c))


def test_array_batches_refuse_fewer_images_than_a_batch():
    images, labels = _arrays(5)
    with pytest.raises(ArtifactError, match="fewer than one batch"):
        ArrayBatches(images, labels, batch_size=6, seed=0)


# --- to_tensor and augment ---------------------------------------------------------------------

def test_to_tensor_scales_and_permutes():
    images = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    x = to_tensor(images)
    assert x.shape == (2, 3, 3, 4) and x.dtype == torch.float32
    assert float(x[1, 2, 0, 3]) == pytest.approx(images[1, 0, 3, 2] / 255.0)
    assert float(to_tensor(np.full((1, 1, 1, 1), 255, np.uint8))) == 1.0


def _windows(x, pad):
    """All crops (h x w) of x zero-padded by `pad`, and their mirror images."""
    c, h, w = x.shape
    padded = torch.nn.functional.pad(x, [pad] * 4)
    crops = [padded[:, dy:dy + h, dx:dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return crops, [crop.flip(2) for crop in crops]


def test_augment_crop_and_flip_take_values_from_the_padded_image():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((64, 3, 6, 5), generator=generator) + 0.5  # no pixel equals the zero padding
    out = augment(x, torch.Generator().manual_seed(1), crop_padding=2, flip=True)
    assert out.shape == x.shape and out.dtype == x.dtype
    flips, offsets = 0, set()
    for i in range(len(x)):
        crops, mirrored = _windows(x[i], 2)
        plain = [k for k, crop in enumerate(crops) if torch.equal(out[i], crop)]
        flipped = [k for k, crop in enumerate(mirrored) if torch.equal(out[i], crop)]
        assert plain or flipped, f"image {i} is not a (mirrored) crop of its padded source"
        flips += bool(flipped) and not plain
        offsets.update(plain or flipped)
    assert 10 < flips < 54  # each image is flipped with probability 1/2
    assert len(offsets) > 10  # crops move around the 25 possible offsets


def test_augment_crop_only_and_flip_only():
    x = torch.rand((32, 1, 4, 4), generator=torch.Generator().manual_seed(2)) + 0.5
    cropped = augment(x, torch.Generator().manual_seed(3), crop_padding=1)
    for i in range(len(x)):
        crops, _ = _windows(x[i], 1)
        assert any(torch.equal(cropped[i], crop) for crop in crops)
    assert not torch.equal(cropped, x)

    flipped = augment(x, torch.Generator().manual_seed(3), flip=True)
    same = [torch.equal(flipped[i], x[i]) for i in range(len(x))]
    mirrored = [torch.equal(flipped[i], x[i].flip(2)) for i in range(len(x))]
    assert all(s or m for s, m in zip(same, mirrored))
    assert any(same) and any(mirrored)


def test_augment_is_deterministic_and_identity_without_options():
    x = torch.rand((16, 3, 8, 8), generator=torch.Generator().manual_seed(4))
    a = augment(x, torch.Generator().manual_seed(9), crop_padding=4, flip=True)
    b = augment(x, torch.Generator().manual_seed(9), crop_padding=4, flip=True)
    assert torch.equal(a, b)
    assert torch.equal(augment(x, torch.Generator().manual_seed(9)), x)
