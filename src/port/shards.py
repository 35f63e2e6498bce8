"""Shards: independent jobs over contiguous ranges of one image set, merged in order by one job.

Sampling, pseudo-labelling and scoring all split [0, N) the same way, so a shard's output
depends only on its range and a failed shard reruns alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .artifacts import CHUNK_IMAGES, open_hdf5, read_attrs, write_arrays
from .errors import ArtifactError

SHARD_ATTRS = ("shard", "image_offset", "image_stop")


def shard_bounds(n_images: int, n_shards: int, shard: int, chunk: int = CHUNK_IMAGES) -> tuple[int, int]:
    """Global image range of one shard; shards partition [0, n_images) evenly. When every shard
    gets a chunk or more, the edges fall on HDF5 chunk boundaries, so no chunk is split between
    two shards (read by both, or written in two parts by the merge)."""
    if not 0 <= shard < n_shards:
        raise ArtifactError(f"shard {shard} is outside 0..{n_shards - 1}")
    edges = np.linspace(0, n_images, n_shards + 1)
    if n_images >= n_shards * chunk:
        edges = np.minimum(np.round(edges / chunk) * chunk, n_images)
        edges[-1] = n_images
    edges = edges.round().astype(int)
    return int(edges[shard]), int(edges[shard + 1])


def merge_array_shards(*, shard_paths, out_path, n_images: int | None = None) -> int:
    """Concatenate per-image arrays of shard files in shard order into one file.

    Each shard must start where the previous one stopped (attrs image_offset/image_stop), and
    together they must cover [0, n_images). The merged file keeps the first shard's attrs
    minus the per-shard ones. Rerunning the merge writes the same file (idempotent)."""
    shard_paths = [Path(p) for p in shard_paths]
    parts: dict[str, list[np.ndarray]] = {}
    expected = 0
    for path in shard_paths:
        attrs = read_attrs(path)
        start, stop = int(attrs.get("image_offset", -1)), int(attrs.get("image_stop", -1))
        if start != expected:
            raise ArtifactError(f"{path}: shard starts at image {start}, expected {expected}")
        with open_hdf5(path) as handle:
            keys = sorted(handle.keys())
            if parts and keys != sorted(parts):
                raise ArtifactError(f"{path}: holds {keys}, other shards hold {sorted(parts)}")
            for key in keys:
                values = handle[key][()]
                if len(values) != stop - start:
                    raise ArtifactError(f"{path}: '{key}' has {len(values)} rows for images {start}..{stop}")
                parts.setdefault(key, []).append(values)
        expected = stop
    if n_images is not None and expected != n_images:
        raise ArtifactError(f"{shard_paths[-1]}: shards cover {expected} images, the image set holds {n_images}")
    merged_attrs = {k: v for k, v in read_attrs(shard_paths[0]).items() if k not in SHARD_ATTRS}
    merged_attrs["n_shards"] = len(shard_paths)
    write_arrays(out_path, merged_attrs, **{k: np.concatenate(v) for k, v in parts.items()})
    return expected
