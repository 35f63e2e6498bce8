"""prepare_dataset on every source kind, each read through its real on-disk format.

Nothing is downloaded: digits ship inside scikit-learn, and the CIFAR and npz tests
write small files in exactly the layout the real datasets (or a user's npz) use, then
read them back through the package's real loading code (torchvision's CIFAR reader,
numpy's npz reader).
"""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest
from torchvision.datasets import CIFAR10, CIFAR100

from cifar_format import patterned_image, write_cifar10, write_cifar100
from port.artifacts import read_image_set
from port.errors import ArtifactError, SettingsError
from port.data import load_npz_images, prepare_dataset

DIGITS = {"kind": "digits", "test_fraction": 0.25}


def read_h5(path):
    with h5py.File(path, "r") as handle:
        return handle["images"][()], handle["labels"][()], dict(handle.attrs)


def prepare(tmp_path, name, source, seed=0, tag="run"):
    train, test = tmp_path / tag / "train.h5", tmp_path / tag / "test.h5"
    prepare_dataset(name=name, source=source, seed=seed, train_out=train, test_out=test)
    return train, test


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits_full():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def test_digits_format_and_attrs(tmp_path, digits_full):
    train, test = prepare(tmp_path, "digits", DIGITS, seed=3)
    x_train, y_train, attrs = read_h5(train)
    x_test, y_test, test_attrs = read_h5(test)
    n_total = len(digits_full[1])

    for images, labels in ((x_train, y_train), (x_test, y_test)):
        assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[1:] == (8, 8, 1)
        assert labels.dtype == np.int64 and labels.shape == (len(images),)
        assert set(np.unique(labels)) == set(range(10))
    assert len(x_train) + len(x_test) == n_total
    assert len(x_test) == int(np.ceil(0.25 * n_total))  # scikit-learn rounds the test share up
    # 0..16 scaled to the full 0..255 range
    assert x_train.min() == 0 and x_train.max() == 255
    assert set(np.unique(np.concatenate([x_train, x_test]))) <= {int(round(v * 255 / 16)) for v in range(17)}

    for a in (attrs, test_attrs):
        assert int(a["num_classes"]) == 10
        assert a["stage"] == "prepare_data" and a["dataset"] == "digits" and int(a["seed"]) == 3
        assert json.loads(a["params"]) == DIGITS
    # the normalisation statistics are the *training* images' per-channel mean/std, in [0, 1] units
    pixels = x_train.astype(np.float64) / 255.0
    np.testing.assert_allclose(attrs["channel_mean"], [pixels.mean()], rtol=1e-9)
    np.testing.assert_allclose(attrs["channel_std"], [pixels.std()], rtol=1e-9)
    np.testing.assert_allclose(test_attrs["channel_mean"], attrs["channel_mean"])
    np.testing.assert_allclose(test_attrs["channel_std"], attrs["channel_std"])
    # the package's own reader accepts what was written
    images, labels = read_image_set(train, num_classes=10)
    assert np.array_equal(images, x_train) and np.array_equal(labels, y_train)


def test_digits_split_is_a_stratified_partition(tmp_path, digits_full):
    train, test = prepare(tmp_path, "digits", DIGITS, seed=5)
    x_train, y_train, _ = read_h5(train)
    x_test, y_test, _ = read_h5(test)
    # every real (image, label) pair lands in exactly one split
    raw = np.rint(digits_full[0] * (255.0 / 16.0)).astype(np.uint8).reshape(len(digits_full[1]), -1)
    expected = np.column_stack([raw, digits_full[1]])
    got = np.column_stack([np.concatenate([x_train, x_test]).reshape(len(expected), -1),
                           np.concatenate([y_train, y_test])])
    exp_rows, exp_counts = np.unique(expected, axis=0, return_counts=True)
    got_rows, got_counts = np.unique(got, axis=0, return_counts=True)
    assert np.array_equal(exp_rows, got_rows) and np.array_equal(exp_counts, got_counts)
    # stratified: each class's test share is the configured fraction (up to rounding)
    full_counts = np.bincount(digits_full[1], minlength=10)
    test_counts = np.bincount(y_test, minlength=10)
    assert np.all(np.abs(test_counts - 0.25 * full_counts) <= 1.0)
    assert np.all(np.bincount(y_train, minlength=10) == full_counts - test_counts)


def test_digits_split_is_seeded(tmp_path):
    a = [read_h5(p) for p in prepare(tmp_path, "digits", DIGITS, seed=11, tag="a")]
    b = [read_h5(p) for p in prepare(tmp_path, "digits", DIGITS, seed=11, tag="b")]
    c = [read_h5(p) for p in prepare(tmp_path, "digits", DIGITS, seed=12, tag="c")]
    for (xa, ya, _), (xb, yb, _) in zip(a, b):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    (xa, ya, _), (xc, yc, _) = a[1], c[1]
    assert len(xa) == len(xc)
    assert not np.array_equal(xa, xc)
    assert not np.array_equal(ya, yc)


def test_digits_test_fraction_is_honoured(tmp_path):
    _, test = prepare(tmp_path, "digits", {"kind": "digits", "test_fraction": 0.5}, seed=0)
    _, y_test, _ = read_h5(test)
    assert len(y_test) == int(np.ceil(0.5 * 1797))


def test_unknown_kind_is_an_artifact_error(tmp_path):
    with pytest.raises(SettingsError, match="unknown dataset kind 'mnist'"):
        prepare(tmp_path, "mine", {"kind": "mnist"})


# --------------------------------------------------------------------------- CIFAR (torchvision layout)


def use_checksums(monkeypatch, cls, md5: dict) -> None:
    """Point torchvision's md5 table at our tiny files; its real integrity check still runs."""
    monkeypatch.setattr(cls, "train_list", [[name, md5[name]] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[name, md5[name]] for name, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5[cls.meta["filename"]]})


def test_fake_cifar10_has_the_documented_pickle_layout(tmp_path):
    """Read back the way the CIFAR website documents (encoding="bytes")."""
    (train_x, _), _, _ = write_cifar10(tmp_path, per_batch=4)
    folder = tmp_path / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"])
    with open(folder / "data_batch_1", "rb") as handle:
        entry = pickle.load(handle, encoding="bytes")
    assert {b"data", b"labels", b"batch_label", b"filenames"} <= set(entry)
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (4, 3072)
    assert isinstance(entry[b"labels"], list)
    # the first 1024 values of a row are the red plane, row-major
    assert np.array_equal(entry[b"data"][0, :1024].reshape(32, 32), train_x[0, :, :, 0])
    with open(folder / "batches.meta", "rb") as handle:
        assert pickle.load(handle, encoding="latin1")["label_names"][0] == "airplane"


def test_cifar10_through_torchvision(tmp_path, monkeypatch):
    root = tmp_path / "cifar"
    (train_x, train_y), (test_x, test_y), md5 = write_cifar10(root, per_batch=10)
    use_checksums(monkeypatch, CIFAR10, md5)
    source = {"kind": "cifar10", "root": str(root), "download": False}
    train, test = prepare(tmp_path, "cifar10", source, seed=0)
    x_train, y_train, attrs = read_h5(train)
    x_test, y_test, _ = read_h5(test)

    assert x_train.shape == (50, 32, 32, 3) and x_test.shape == (10, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert np.array_equal(x_train, train_x) and np.array_equal(y_train, train_y)
    assert np.array_equal(x_test, test_x) and np.array_equal(y_test, test_y)
    # CHW rows became HWC pixels: channel 0 varies down the rows, channel 1 along the columns
    assert np.array_equal(x_train[0], patterned_image())
    assert x_train[0, 3, 0, 0] == 21 and x_train[0, 0, 3, 1] == 15 and x_train[0, 5, 9, 2] == 200
    assert int(attrs["num_classes"]) == 10 and attrs["dataset"] == "cifar10"
    pixels = train_x.reshape(-1, 3).astype(np.float64) / 255.0
    np.testing.assert_allclose(attrs["channel_mean"], pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(attrs["channel_std"], pixels.std(0), rtol=1e-9)


def test_cifar10_corrupted_file_fails_integrity_check(tmp_path, monkeypatch):
    root = tmp_path / "cifar"
    _, _, md5 = write_cifar10(root, per_batch=2)
    use_checksums(monkeypatch, CIFAR10, md5)
    path = root / "cifar-10-batches-py" / "data_batch_3"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one pixel byte changes; the pickle itself stays loadable
    path.write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="cannot read cifar10"):
        prepare(tmp_path, "cifar10", {"kind": "cifar10", "root": str(root), "download": False})


def test_cifar10_copy_with_its_own_md5_table(tmp_path):
    """`source.md5` reads a folder that is not the official release, still checking every file."""
    root = tmp_path / "cifar"
    (train_x, train_y), _, md5 = write_cifar10(root, per_batch=2)
    source = {"kind": "cifar10", "root": str(root), "download": False, "md5": md5}
    x_train, y_train, _ = read_h5(prepare(tmp_path, "cifar10", source)[0])
    assert np.array_equal(x_train, train_x) and np.array_equal(y_train, train_y)
    wrong = {**md5, "data_batch_2": "0" * 32}
    with pytest.raises(ArtifactError, match="cannot read cifar10"):
        prepare(tmp_path / "wrong", "cifar10", {**source, "md5": wrong})
    with pytest.raises(ArtifactError, match="source.md5: data_batch_9 not among the cifar10 files"):
        prepare(tmp_path / "unknown", "cifar10", {**source, "md5": {**md5, "data_batch_9": "0" * 32}})


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_missing_root_is_an_artifact_error(tmp_path, kind):
    root = tmp_path / "no_such_root"
    with pytest.raises(ArtifactError) as info:
        prepare(tmp_path, kind, {"kind": kind, "root": str(root), "download": False})
    assert str(root) in str(info.value) and "download: true" in str(info.value)
    assert not (tmp_path / "run" / "train.h5").exists()


def test_cifar100_through_torchvision(tmp_path, monkeypatch):
    root = tmp_path / "cifar100"
    (train_x, train_y), (test_x, test_y), md5 = write_cifar100(root)
    use_checksums(monkeypatch, CIFAR100, md5)
    train, test = prepare(tmp_path, "c100", {"kind": "cifar100", "root": str(root), "download": False})
    x_train, y_train, attrs = read_h5(train)
    x_test, y_test, _ = read_h5(test)
    assert np.array_equal(x_train, train_x) and np.array_equal(y_train, train_y)  # fine labels
    assert np.array_equal(x_test, test_x) and np.array_equal(y_test, test_y)
    assert int(attrs["num_classes"]) == 100


# --------------------------------------------------------------------------- npz


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def npz_pair(tmp_path, n_train=12, n_test=6, shape=(6, 6, 3), classes=4, seed=0, image_key="image",
             label_key="label"):
    gen = np.random.default_rng(seed)
    data = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = gen.integers(0, 256, (n, *shape), dtype=np.uint8)
        y = np.arange(n) % classes
        data[split] = (x, y)
        save_npz(tmp_path / f"{split}.npz", **{image_key: x, label_key: y.astype(np.int32)})
    return data


def test_npz_to_hdf5(tmp_path):
    data = npz_pair(tmp_path)
    source = {"kind": "npz", "train": str(tmp_path / "train.npz"), "test": str(tmp_path / "test.npz"),
              "num_classes": 4}
    train, test = prepare(tmp_path, "mine", source, seed=9)
    for path, (x, y) in ((train, data["train"]), (test, data["test"])):
        images, labels, attrs = read_h5(path)
        assert images.dtype == np.uint8 and np.array_equal(images, x)
        assert labels.dtype == np.int64 and np.array_equal(labels, y)
        assert int(attrs["num_classes"]) == 4 and int(attrs["seed"]) == 9
        assert len(attrs["channel_mean"]) == 3


def test_npz_custom_keys(tmp_path):
    data = npz_pair(tmp_path, shape=(4, 4, 1), image_key="x", label_key="y")
    source = {"kind": "npz", "train": str(tmp_path / "train.npz"), "test": str(tmp_path / "test.npz"),
              "image_key": "x", "label_key": "y", "num_classes": 4}
    train, _ = prepare(tmp_path, "mine", source)
    images, labels, attrs = read_h5(train)
    assert images.shape == (12, 4, 4, 1) and np.array_equal(images, data["train"][0])
    assert np.array_equal(labels, data["train"][1])
    # the default keys are not there
    with pytest.raises(ArtifactError, match="no key 'image'"):
        prepare(tmp_path, "mine", {**source, "image_key": "image"}, tag="default_keys")


def test_npz_without_num_classes(tmp_path):
    """`num_classes` is optional in the schema for npz; it is then taken from the labels."""
    npz_pair(tmp_path, classes=4)
    source = {"kind": "npz", "train": str(tmp_path / "train.npz"), "test": str(tmp_path / "test.npz")}
    train, test = prepare(tmp_path, "mine", source)
    assert int(read_h5(train)[2]["num_classes"]) == 4
    assert int(read_h5(test)[2]["num_classes"]) == 4
    # a class seen only in the test split is refused (issue 15); negative labels are still refused
    _one(tmp_path, "test.npz", image=IMAGES, label=np.array([0, 1, 6, 0, 1]))
    _one(tmp_path, "train.npz", image=IMAGES, label=LABELS)
    with pytest.raises(ArtifactError, match=r"test.npz: class\(es\) \[6\] appear in test but never in .*train.npz"):
        prepare(tmp_path, "mine", source, tag="wide")
    _one(tmp_path, "test.npz", image=IMAGES, label=np.array([0, -1, 2, 0, 1]))
    with pytest.raises(ArtifactError, match=r"/test.npz: labels must lie in \[0, 2\], found -1..2"):
        prepare(tmp_path, "mine", source, tag="negative")


def _one(tmp_path, name="bad.npz", **arrays):
    return save_npz(tmp_path / name, **arrays)


IMAGES = np.zeros((5, 4, 4, 3), dtype=np.uint8)
LABELS = np.array([0, 1, 2, 0, 1])


def test_npz_missing_file(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(ArtifactError, match="file not found") as info:
        load_npz_images(path)
    assert str(path) in str(info.value)
    with pytest.raises(ArtifactError, match="absent.npz"):
        prepare(tmp_path, "mine", {"kind": "npz", "train": str(path), "test": str(path), "num_classes": 3})


def test_npz_unreadable_file(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not an npz archive at all")
    with pytest.raises(ArtifactError, match="not an npz of arrays") as info:
        load_npz_images(path)
    assert str(path) in str(info.value)


def test_npz_missing_keys_list_available_keys(tmp_path):
    path = _one(tmp_path, images=IMAGES, targets=LABELS)
    with pytest.raises(ArtifactError) as info:
        load_npz_images(path)
    message = str(info.value)
    assert str(path) in message and "no key 'image'" in message and "images" in message and "targets" in message
    path = _one(tmp_path, "labels.npz", image=IMAGES, targets=LABELS)
    with pytest.raises(ArtifactError, match=r"no key 'label' \(keys: .*targets"):
        load_npz_images(path)
    # label_key=None: images only
    images, labels = load_npz_images(path, label_key=None)
    assert labels is None and np.array_equal(images, IMAGES)


@pytest.mark.parametrize("images, pattern", [
    (IMAGES.astype(np.float32), "must be uint8"),
    (np.zeros((5, 4, 4), dtype=np.uint8), r"must be \(N, H, W, C\)"),
    (np.zeros((5, 4, 4, 2), dtype=np.uint8), r"must be \(N, H, W, C\)"),
    (np.zeros((0, 4, 4, 3), dtype=np.uint8), "no images"),
])
def test_npz_bad_images(tmp_path, images, pattern):
    path = _one(tmp_path, image=images, label=np.zeros(len(images), dtype=np.int64))
    with pytest.raises(ArtifactError, match=pattern) as info:
        load_npz_images(path)
    assert str(path) in str(info.value)


def test_npz_labels_out_of_range(tmp_path):
    path = _one(tmp_path, image=IMAGES, label=np.array([0, 1, 2, 3, 1]))
    with pytest.raises(ArtifactError, match=r"labels must lie in \[0, 2\], found 0..3") as info:
        load_npz_images(path, num_classes=3)
    assert str(path) in str(info.value)
    images, labels = load_npz_images(path, num_classes=4)
    assert labels.dtype == np.int64
    path = _one(tmp_path, "negative.npz", image=IMAGES, label=np.array([0, -1, 2, 0, 1]))
    with pytest.raises(ArtifactError, match="labels must lie in"):
        load_npz_images(path, num_classes=3)
    # through prepare_dataset, the configured num_classes applies
    good = _one(tmp_path, "good.npz", image=IMAGES, label=LABELS)
    with pytest.raises(ArtifactError, match=r"bad\.npz: labels must lie in \[0, 2\]"):
        prepare(tmp_path, "mine", {"kind": "npz", "train": str(good), "test": str(tmp_path / "bad.npz"),
                                   "num_classes": 3})


@pytest.mark.parametrize("labels", [np.array([0.0, 1.0, 2.0, 0.0, 1.0]), np.zeros((5, 1), dtype=np.int64)])
def test_npz_labels_not_1d_integers(tmp_path, labels):
    path = _one(tmp_path, image=IMAGES, label=labels)
    with pytest.raises(ArtifactError, match="labels must be a 1-D integer array") as info:
        load_npz_images(path)
    assert str(path) in str(info.value)


def test_npz_length_mismatch(tmp_path):
    path = _one(tmp_path, image=IMAGES, label=LABELS[:4])
    with pytest.raises(ArtifactError, match="5 images but 4 labels") as info:
        load_npz_images(path, num_classes=3)
    assert str(path) in str(info.value)
