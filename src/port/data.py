"""Real datasets: scikit-learn's digits, torchvision's CIFAR-10/100, or a user's npz files.

Each becomes `train.h5` and `test.h5` (uint8 NHWC images, int64 labels) with the
per-channel mean and std of the training images, which the models use to normalise.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .artifacts import check_labels, provenance, shape_text, write_images
from .errors import ArtifactError, SettingsError
from .fetch import torchvision_dataset, verify_fetched
from .presampled import read_npy_header
from .seeds import rng
from .settings.data import NUM_CLASSES, validation_count

IMAGE_SHAPES = {"digits": (8, 8, 1), "cifar10": (32, 32, 3), "cifar100": (32, 32, 3)}  # (H, W, C) of the built-ins


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


def load_torchvision_split(kind: str, root: str, md5: dict | None = None):
    """CIFAR-10/100 through torchvision (reads the `cifar-10-batches-py` layout), which checks every
    file's md5 before unpickling it: the official release's, or `md5` (file name -> digest) for a
    copy in the same format that is not the release (a subset, or a test fixture). Never downloads:
    a `download: true` source is fetched by the local rule fetch_source (port.fetch)."""
    cls = torchvision_dataset(kind)
    if md5:
        cls = _with_checksums(cls, md5, kind)
    try:
        train = cls(root=root, train=True, download=False)
        test = cls(root=root, train=False, download=False)
    except RuntimeError as err:
        raise ArtifactError(f"{root}: cannot read {kind} ({err}); set `download: true` or fix `root`") from err
    return ((np.asarray(train.data, dtype=np.uint8), np.asarray(train.targets, dtype=np.int64)),
            (np.asarray(test.data, dtype=np.uint8), np.asarray(test.targets, dtype=np.int64)))


def _with_checksums(cls, md5: dict, kind: str):
    """A subclass of a torchvision CIFAR dataset that expects the given md5 digests (the archive's,
    also allowed, is port.fetch's to check)."""
    files = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"], cls.filename]
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
    archive = open_npz(path)
    with archive:
        images = _npz_array(archive, image_key, path)
        labels = None if label_key is None else _npz_array(archive, label_key, path)
    check_images(images, path)
    if labels is not None:
        check_labels(labels, num_classes, path)
        if len(labels) != len(images):
            raise ArtifactError(f"{path}: {len(images)} images but {len(labels)} labels")
        labels = labels.astype(np.int64)
    return images, labels


_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a member first; an empty archive (np.savez() of nothing)


def open_npz(path) -> np.lib.npyio.NpzFile:
    """An npz archive of plain arrays; anything else (a pickle, a lone .npy, text, a directory)
    is refused with one message naming the file. Nothing is unpickled."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path}: is a directory, expected an npz file")
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    with open(path, "rb") as stream:
        is_zip = stream.read(4) in _ZIP_SIGNATURES
    if not is_zip:
        raise ArtifactError(f"{path}: not an npz of arrays (no zip archive, as numpy.savez writes)")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ArtifactError(f"{path}: not an npz of arrays (unreadable zip archive: {type(err).__name__})") from err


def _missing_key(archive, key: str, path) -> ArtifactError:
    keys = ", ".join(archive.files) or "none: an empty archive"
    return ArtifactError(f"{path}: no key '{key}' (keys: {keys})")


def _npz_header(archive, key: str, path) -> tuple[tuple, bool, np.dtype]:
    """The `.npy` header of member `key`, checked against the member's size (see read_npy_header)."""
    if key not in archive.files:
        raise _missing_key(archive, key, path)
    try:
        info = archive.zip.getinfo(f"{key}.npy")
        with archive.zip.open(info) as member:
            return read_npy_header(member, f"{path}: '{key}'", info.file_size)
    except (OSError, KeyError, zipfile.BadZipFile) as err:  # KeyError: a member not written by numpy.savez
        raise ArtifactError(f"{path}: not an npz of arrays: unreadable header of '{key}'") from err


def _npz_array(archive, key: str, path) -> np.ndarray:
    _npz_header(archive, key, path)
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # object arrays need pickle: refused
        raise ArtifactError(f"{path}: not an npz of arrays: '{key}' is not a plain numeric array "
                            f"({type(err).__name__})") from err


def npz_image_shape(path, image_key: str = "image", label_key: str | None = None) -> tuple:
    """The (N, H, W, C) shape of an npz's images from the array header alone (no data read);
    refuses an npz without the image key (or the label key, when given)."""
    with open_npz(path) as archive:
        for key in (image_key, label_key):
            if key is not None and key not in archive.files:
                raise _missing_key(archive, key, path)
        shape, _, dtype = _npz_header(archive, image_key, path)
    if dtype.hasobject:
        raise ArtifactError(f"{path}: not an npz of arrays: '{image_key}' holds Python objects")
    return tuple(shape)


def check_same_geometry(first, first_shape, second, second_shape) -> None:
    """Two image sets that meet (train and test, real and synthetic) must share H, W and C."""
    if tuple(first_shape[-3:]) != tuple(second_shape[-3:]):
        raise ArtifactError(f"{second}: images are {shape_text(second_shape)}, but {first} holds "
                            f"{shape_text(first_shape)} images")


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


def npz_class_count(name: str, source: dict, train_labels: np.ndarray, test_labels: np.ndarray) -> int:
    """The classes of an npz dataset without `num_classes` (optional in the schema): as many as
    the training labels use. A test class that training never shows is a label mix-up, not a
    class: refused (prepare_data, and when the workflow plans the run: see port.inputs)."""
    num_classes = int(train_labels.max()) + 1
    check_labels(train_labels, num_classes, source["train"])  # still rejects negative labels
    unseen = np.setdiff1d(test_labels[test_labels >= 0], train_labels)
    if len(unseen):
        raise ArtifactError(f"{source['test']}: class(es) {unseen.tolist()} appear in test but never in "
                            f"{source['train']}; set datasets.{name}.source.num_classes if that is intended")
    check_labels(test_labels, num_classes, source["test"])
    return num_classes


def npz_labels(path, label_key: str, num_classes: int | None) -> np.ndarray:
    """An npz's labels alone (no images read), checked against the class count when known."""
    with open_npz(path) as archive:
        labels = _npz_array(archive, label_key, path)
    check_labels(labels, num_classes, path)
    return labels


def prepare_dataset(*, name: str, source: dict, seed: int, train_out, test_out, fetched=None) -> None:
    """Materialise one configured dataset as train/test HDF5 image sets; `fetched`: the folder the
    local rule fetch_source extracted a `download: true` source into (checked against its manifest;
    not read otherwise)."""
    kind = source["kind"]
    num_classes = source.get("num_classes") or NUM_CLASSES.get(kind)
    if kind == "digits":
        train, test = load_digits_split(source.get("test_fraction", 0.25), seed)
    elif kind in ("cifar10", "cifar100"):
        root = source.get("root")
        if source.get("download"):
            verify_fetched(fetched)
            root = fetched
        train, test = load_torchvision_split(kind, root, source.get("md5"))
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
    check_same_geometry(source.get("train", f"{name}/train"), train[0].shape,
                        source.get("test", f"{name}/test"), test[0].shape)
    if num_classes is None:
        num_classes = npz_class_count(name, source, train[1], test[1])
    mean, std = channel_stats(train[0])
    for (images, labels), out in ((train, train_out), (test, test_out)):
        attrs = provenance("prepare_data", source, seed, dataset=name, num_classes=int(num_classes),
                           channel_mean=mean, channel_std=std)
        write_images(out, images, attrs, labels=labels)


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) of a seeded random split of the real training set."""
    order = rng(seed, "validation").permutation(n)
    n_val = validation_count(n, fraction)
    if n_val >= n:
        raise SettingsError(f"val_fraction {fraction} leaves no training images out of {n}")
    return np.sort(order[n_val:]), np.sort(order[:n_val])
