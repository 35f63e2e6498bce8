"""Real datasets: scikit-learn's digits, torchvision's CIFAR-10/100, or a user's npz files.

Each becomes `train.h5` and `test.h5` (uint8 NHWC images, int64 labels) with the
per-channel mean and std of the training images, which the models use to normalise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .artifacts import ArtifactError, check_labels, provenance, write_images
from .config import NUM_CLASSES, SettingsError


def load_digits_split(test_fraction: float, seed: int):
    """8x8 digits scaled from 0..16 to 0..255, with a seeded stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed)
    return (x_train, y_train), (x_test, y_test)


def load_torchvision_split(kind: str, root: str, download: bool, md5: dict | None = None):
    """CIFAR-10/100 through torchvision (reads the `cifar-10-batches-py` layout), which checks every
    file's md5 before unpickling it: the official release's, or `md5` (file name -> digest) for a
    copy in the same format that is not the release (a subset, or a test fixture)."""
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[kind]
    if md5:
        cls = _with_checksums(cls, md5, kind)
    try:
        train = cls(root=root, train=True, download=download)
        test = cls(root=root, train=False, download=download)
    except RuntimeError as err:
        raise ArtifactError(f"{root}: cannot read {kind} ({err}); set `download: true` or fix `root`") from err
    return ((np.asarray(train.data, dtype=np.uint8), np.asarray(train.targets, dtype=np.int64)),
            (np.asarray(test.data, dtype=np.uint8), np.asarray(test.targets, dtype=np.int64)))


def _with_checksums(cls, md5: dict, kind: str):
    """A subclass of a torchvision CIFAR dataset that expects the given md5 digests."""
    files = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    unknown = sorted(set(md5) - set(files))
    if unknown:
        raise ArtifactError(f"source.md5: {', '.join(unknown)} not among the {kind} files ({', '.join(files)})")
    return type(cls.__name__, (cls,), {
        "train_list": [[name, md5.get(name, digest)] for name, digest in cls.train_list],
        "test_list": [[name, md5.get(name, digest)] for name, digest in cls.test_list],
        "meta": {**cls.meta, "md5": md5.get(cls.meta["filename"], cls.meta["md5"])}})


def load_npz_images(path, image_key: str = "image", label_key: str | None = "label",
                    num_classes: int | None = None):
    """Read uint8 (N, H, W, C) images and optional integer labels from an npz file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ArtifactError(f"{path}: not a readable npz file ({err})") from err
    with archive:
        if image_key not in archive:
            raise ArtifactError(f"{path}: no key '{image_key}' (keys: {', '.join(archive.files)})")
        images = archive[image_key]
        labels = None
        if label_key is not None:
            if label_key not in archive:
                raise ArtifactError(f"{path}: no key '{label_key}' (keys: {', '.join(archive.files)})")
            labels = archive[label_key]
    check_images(images, path)
    if labels is not None:
        check_labels(labels, num_classes, path)
        if len(labels) != len(images):
            raise ArtifactError(f"{path}: {len(images)} images but {len(labels)} labels")
        labels = labels.astype(np.int64)
    return images, labels


def check_images(images: np.ndarray, source) -> None:
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        raise ArtifactError(f"{source}: images contain NaN or Inf (expected uint8 in 0..255)")
    if np.issubdtype(images.dtype, np.integer) and images.dtype != np.uint8 and images.size \
            and (images.min() < 0 or images.max() > 255):
        raise ArtifactError(f"{source}: image values {images.min()}..{images.max()} lie outside 0..255")
    if images.dtype != np.uint8:
        raise ArtifactError(f"{source}: images must be uint8 in 0..255, got {images.dtype}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ArtifactError(f"{source}: images must be (N, H, W, C) with C in (1, 3), got {images.shape}")
    if len(images) == 0:
        raise ArtifactError(f"{source}: no images")


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return pixels.mean(0).tolist(), np.maximum(pixels.std(0), 1e-3).tolist()


def prepare_dataset(*, name: str, source: dict, seed: int, train_out, test_out) -> None:
    """Materialise one configured dataset as train/test HDF5 image sets."""
    kind = source["kind"]
    num_classes = source.get("num_classes") or NUM_CLASSES.get(kind)
    if kind == "digits":
        train, test = load_digits_split(source.get("test_fraction", 0.25), seed)
    elif kind in ("cifar10", "cifar100"):
        train, test = load_torchvision_split(kind, source["root"], source.get("download", False), source.get("md5"))
    elif kind == "npz":
        keys = dict(image_key=source.get("image_key", "image"), label_key=source.get("label_key", "label"),
                    num_classes=num_classes)
        train = load_npz_images(source["train"], **keys)
        test = load_npz_images(source["test"], **keys)
    else:
        raise SettingsError(f"datasets.{name}.source.kind: unknown dataset kind '{kind}'")
    for split, (images, labels) in (("train", train), ("test", test)):
        check_images(images, f"{name}/{split}")
        check_labels(labels, num_classes, f"{name}/{split}")
    if num_classes is None:  # npz without `num_classes` (optional in the schema): as many as the labels use
        num_classes = int(max(train[1].max(), test[1].max())) + 1
        for split, (_, labels) in (("train", train), ("test", test)):
            check_labels(labels, num_classes, f"{name}/{split}")  # still rejects negative labels
    mean, std = channel_stats(train[0])
    for (images, labels), out in ((train, train_out), (test, test_out)):
        attrs = provenance("prepare_data", source, seed, dataset=name, num_classes=int(num_classes),
                           channel_mean=mean, channel_std=std)
        write_images(out, images, attrs, labels=labels)
