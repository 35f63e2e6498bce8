"""Files in the CIFAR python-version layout (`cifar-10-batches-py`, `cifar-100-python`), written
byte-compatible with the real release so torchvision's reader reads them as it reads CIFAR."""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np


class Py2Pickler(pickle._Pickler):
    """Pickle `bytes` as Python 2 `str` (BINSTRING opcodes), as the real CIFAR batches were written.

    Loaded with encoding="latin1" (torchvision) those become `str`; with encoding="bytes"
    (the snippet on the CIFAR website) they stay `bytes`, giving the familiar b"data" keys.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dump_py2(obj, path: Path) -> str:
    with open(path, "wb") as handle:
        Py2Pickler(handle, protocol=2).dump(obj)
    return hashlib.md5(path.read_bytes()).hexdigest()


def cifar_batch(images_hwc: np.ndarray, labels, name: str, label_key: bytes = b"labels", extra=None) -> dict:
    """One batch dict: b"data" holds uint8 rows of 3072 values, each image in CHW order."""
    rows = np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), 3072))
    entry = {b"batch_label": name.encode(), label_key: [int(v) for v in labels], b"data": rows,
             b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(labels))]}
    entry.update(extra or {})
    return entry


def patterned_image() -> np.ndarray:
    """Channel 0 = row, channel 1 = column, channel 2 = constant: any axis mix-up shows."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([rows * 7, cols * 5, np.full((32, 32), 200)], axis=-1).astype(np.uint8)


def random_images(gen: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    return gen.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)


def class_coloured_images(gen: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Class k is a colour of its own (10 hues around the RGB cube's grey axis, 76 levels apart)
    plus uniform noise: tiny models learn it in an epoch, so attacks have correct images to attack."""
    hue = 2 * np.pi * labels[:, None] / 10 + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    colour = 128 + 100 * np.cos(hue)
    noise = gen.uniform(-40, 40, (len(labels), 32, 32, 3))
    return np.clip(np.rint(colour[:, None, None, :] + noise), 0, 255).astype(np.uint8)


def write_cifar10(root: Path, per_batch: int = 10, seed: int = 0, n_test: int | None = None,
                  draw_images=random_images):
    """A tiny `cifar-10-batches-py` directory (five training batches of `per_batch` images, a test
    batch of `n_test`, default `per_batch`); returns (train, test) HWC arrays and the md5 table."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    gen = np.random.default_rng(seed)
    md5 = {}
    train_x, train_y = [], []
    for i in range(1, 6):
        y = gen.integers(0, 10, per_batch)
        x = draw_images(gen, y)
        if i == 1:
            x[0] = patterned_image()
        name = f"data_batch_{i}"
        md5[name] = dump_py2(cifar_batch(x, y, f"training batch {i} of 5"), folder / name)
        train_x.append(x)
        train_y.append(y)
    test_y = gen.integers(0, 10, per_batch if n_test is None else n_test)
    test_x = draw_images(gen, test_y)
    md5["test_batch"] = dump_py2(cifar_batch(test_x, test_y, "testing batch 1 of 1"), folder / "test_batch")
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    md5["batches.meta"] = dump_py2({b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072},
                                   folder / "batches.meta")
    return (np.concatenate(train_x), np.concatenate(train_y)), (test_x, test_y), md5


def write_cifar100(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 1):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    gen = np.random.default_rng(seed)
    md5, out = {}, []
    for name, n in (("train", n_train), ("test", n_test)):
        x = gen.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine, coarse = gen.integers(0, 100, n), gen.integers(0, 20, n)
        entry = cifar_batch(x, fine, name, label_key=b"fine_labels", extra={b"coarse_labels": [int(v) for v in coarse]})
        md5[name] = dump_py2(entry, folder / name)
        out.append((x, fine))
    md5["meta"] = dump_py2({b"fine_label_names": [f"class_{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"super_{i}".encode() for i in range(20)]}, folder / "meta")
    return out[0], out[1], md5
