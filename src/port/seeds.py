"""Deterministic seeds derived from a root seed and a path of names or indices.

Each shard, epoch and stage gets its own stream, so work can be split, resumed or rerun
in any order and still give the same bytes.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(root: int, *parts: int | str) -> int:
    words = [int(root)]
    for part in parts:
        if isinstance(part, str):
            words.append(int.from_bytes(hashlib.sha256(part.encode()).digest()[:4], "little"))
        else:
            words.append(int(part))
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint32)[0])


def rng(root: int, *parts: int | str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(root, *parts))
