"""Benchmark 5: the synthetic-data loader against np.load, images/s and peak memory.

A CIFAR-shaped set (32x32x3 uint8 random bytes, int64 labels) is written to a temporary
folder as the pipeline writes synthetic sets (HDF5, 1024-image chunks) and as an uncompressed
npz, and deleted afterwards. Each path runs in its own process, so its peak RSS is its own:

- project: ChunkShuffleStream, shuffled batches of 128 read in whole chunks by a background
  thread, over `--read` images (the stream's memory does not grow with the set);
- plain: `np.load` of the npz (the whole set in memory), then shuffled batches of 128 by
  fancy indexing over as many images; its time includes the load.

The file is freshly written, so reads may come from the page cache: the rate is the loader's
CPU cost, an upper bound on a cold disk.

    python bench/loader.py                 # 1M images (3 GB on disk, twice)
    python bench/loader.py --images 10000000 --no-npz   # 10M: the stream's RSS stays flat
    python bench/loader.py --small         # 50k images, seconds
"""

from __future__ import annotations

import multiprocessing
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import compared, parser, write_result
from port.artifacts import ImageWriter, provenance
from port.loaders import ChunkShuffleStream

SHAPE = (32, 32, 3)
BATCH = 128
WRITE_BLOCK = 16384


def build(folder: Path, n: int, npz: bool) -> tuple[Path, Path | None]:
    """The HDF5 set (and an npz of the same bytes) of n random images, written block by block."""
    generator = np.random.default_rng(0)
    h5_path, npy_path = folder / "images.h5", folder / "images.npy"
    images = np.lib.format.open_memmap(npy_path, mode="w+", dtype=np.uint8, shape=(n, *SHAPE)) if npz else None
    labels = np.empty(n, dtype=np.int64)
    with ImageWriter(h5_path, SHAPE, provenance("bench-loader")) as writer:
        for start in range(0, n, WRITE_BLOCK):
            count = min(WRITE_BLOCK, n - start)
            block = generator.integers(0, 256, (count, *SHAPE), dtype=np.uint8)
            labels[start:start + count] = generator.integers(0, 10, count)
            writer.append(block, labels=labels[start:start + count])
            if npz:
                images[start:start + count] = block
    if not npz:
        return h5_path, None
    np.savez(folder / "images.npz", images=images, labels=labels)
    del images
    npy_path.unlink()
    return h5_path, folder / "images.npz"


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: an upper bound


def run_stream(path: Path, n_read: int, queue) -> None:
    stream = ChunkShuffleStream(path, BATCH, seed=0)
    batches = stream.batches(0)
    started, seen, checksum = time.perf_counter(), 0, 0
    while seen < n_read:
        images, labels = next(batches)
        seen += len(labels)
        checksum += int(labels[0])  # touch the batch
    batches.close()
    queue.put((seen / (time.perf_counter() - started), peak_rss_bytes()))


def run_npz(path: Path, n_read: int, queue) -> None:
    started = time.perf_counter()
    with np.load(path) as data:
        images, labels = data["images"], data["labels"]
    order = np.random.default_rng(0).permutation(len(images))
    seen, position = 0, 0
    while seen < n_read:
        if position + BATCH > len(order):
            order, position = np.random.default_rng(seen).permutation(len(images)), 0
        index = np.sort(order[position:position + BATCH])
        batch_images, batch_labels = images[index], labels[index]
        position += BATCH
        seen += len(batch_labels)
    queue.put((seen / (time.perf_counter() - started), peak_rss_bytes()))


def measure(target, path: Path, n_read: int) -> tuple[float, int]:
    """Rate and peak RSS of one loader, in a fresh process of its own."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(path, n_read, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help="set size (default 1M, 50k with --small)")
    p.add_argument("--read", type=int, default=None, help="images read per loader (default: min(set, 500k))")
    p.add_argument("--no-npz", action="store_true", help="skip the npz baseline (10M images do not fit in memory)")
    p.add_argument("--tmp", default=None, help="folder for the temporary files (default: the system's)")
    args = p.parse_args()
    args.device = "cpu"  # a loader benchmark: the host side
    n = args.images or (50_000 if args.small else 1_000_000)
    n_read = args.read or min(n, 500_000)
    folder = Path(tempfile.mkdtemp(prefix="port-bench-loader-", dir=args.tmp))
    try:
        started = time.perf_counter()
        h5_path, npz_path = build(folder, n, npz=not args.no_npz)
        build_seconds = time.perf_counter() - started
        stream_rate, stream_rss = measure(run_stream, h5_path, n_read)
        rows = []
        if npz_path is not None:
            npz_rate, npz_rss = measure(run_npz, npz_path, n_read)
            rows.append(compared("ChunkShuffleStream vs np.load + fancy indexing", "images/s", stream_rate, npz_rate,
                                 peak_rss_bytes=stream_rss, baseline_peak_rss_bytes=npz_rss))
        else:
            rows.append({"what": "ChunkShuffleStream", "unit": "images/s", "rate": stream_rate,
                         "peak_rss_bytes": stream_rss})
        settings = dict(n_images=n, n_read=n_read, batch_size=BATCH, image_shape=SHAPE,
                        hdf5_bytes=h5_path.stat().st_size, build_seconds=build_seconds)
        write_result(f"loader-{n}" if args.images else "loader", args, settings, rows)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
