"""One artifact convention for every stage: HDF5 image sets, tidy CSV, torch checkpoints.

Every write goes to a temporary file beside the target and is renamed into place only
when complete, so a killed job never leaves a file that looks finished. Every HDF5 file
carries its provenance (stage, parameter hash, seed, package versions) as attributes.

Integrity: every HDF5 file records `content_sha256`, a digest of its datasets (name, dtype,
shape and bytes, in sorted name order) and of the attributes models are built from
(`num_classes`, `channel_mean`, `channel_std`): the identity of its content, the same for
reruns that write the same data. Every HDF5 file is also sealed: its HDF5 user block holds the sha256 of all the bytes
after it. `verified_inputs` (entered by `port.logs.logged_job` for every Snakemake job) checks
each input's seal as plain bytes before HDF5 parses the file (libhdf5 can crash the process on
a damaged attribute or header), recomputes its content digest, refuses a file that changed
after it was written, and makes
the inputs' digests part of the provenance of everything the job writes (`inputs_sha256`).
Every torch checkpoint records a digest of its contents under `content_sha256`, verified
whenever `load_torch` reads it. Every HDF5 read goes through `open_hdf5`, which turns the
errors of a damaged file (h5py raises OSError, RuntimeError, KeyError or ValueError from deep
inside a read) into one ArtifactError naming the file.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import glob
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Iterator, Mapping

import h5py
import numpy as np
import pandas as pd

from .errors import ArtifactError

log = logging.getLogger(__name__)
CHUNK_IMAGES = 1024  # images per HDF5 chunk: whole-chunk reads stay fast and memory-bounded
_PACKAGES = ("port-pipeline", "torch", "numpy", "h5py", "diffusers", "snakemake")
HASH_BLOCK_BYTES = 64 << 20  # verification reads this much at a time, whatever the file size
SOURCE_LABELS = "source_labels"  # dataset of a generator's own class of each image (conditional generators)
CHECKSUM_KEY = "content_sha256"  # HDF5 attribute / checkpoint key holding the content digest
# Attributes that are content, not provenance: models are built from them. They are part of
# `content_sha256`; provenance (stage, params, versions, paths, offsets) is not, so reruns that
# produce the same data have the same digest.
CONTENT_ATTRS = ("num_classes", "channel_mean", "channel_std")
INPUTS_KEY = "inputs_sha256"  # HDF5 attribute / checkpoint key: {input path: digest} of the job
_MAX_INPUTS_ATTR = 48_000  # HDF5 attributes stop at 64 KiB; beyond this only a digest is kept
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MODEL_DIRECTORY_MARKER = "model_index.json"  # what save_pretrained writes: the only directory a stage reads
FETCHED_MARKER = "manifest.json"  # a folder fetched by fetch_model or fetch_source (port.fetch): the other one
SEAL_BYTES = 512  # the HDF5 user block (ignored by HDF5) that holds the file's seal
_SEAL_PREFIX = b"port-pipeline seal sha256 "
_input_checksums: contextvars.ContextVar[dict | None] = contextvars.ContextVar("port_input_checksums",
                                                                              default=None)


def settings_hash(settings: Mapping) -> str:
    """Stable short hash of a stage's settings (key order does not matter)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what `platform` knows)."""
    import platform

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def compute_device() -> str:
    """What this process computed on: the current CUDA device's name once the job started CUDA,
    else the CPU model. Results are bitwise reproducible only on the same device and software."""
    torch = sys.modules.get("torch")  # a job that never imported torch ran on the CPU
    if torch is not None and torch.cuda.is_initialized():
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {cpu_model()}"


def determinism_settings() -> dict:
    """The torch switches that decide whether a rerun repeats the same floating-point operations;
    a job that never imported torch (a merge, a selection, a table) computed nothing with it, and
    provenance does not import it for them."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {"torch": "not imported"}
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "num_threads": torch.get_num_threads()}


def provenance(stage: str, settings: Mapping | None = None, seed: int | None = None, **extra) -> dict:
    """Attributes stored on every HDF5 artifact: the stage and its settings, package versions, and
    the device and determinism settings it ran under (what a bitwise rerun must match)."""
    attrs = {
        "stage": stage,
        "params_hash": settings_hash(settings or {}),
        "params": json.dumps(settings or {}, sort_keys=True, default=str),
        "versions": json.dumps(package_versions(), sort_keys=True),
        "device": compute_device(),
        "determinism": json.dumps(determinism_settings(), sort_keys=True),
    }
    if seed is not None:
        attrs["seed"] = int(seed)
    attrs.update({k: v for k, v in extra.items() if v is not None})
    inputs = _input_checksums.get()
    if inputs:
        blob = json.dumps(inputs, sort_keys=True)
        if len(blob) > _MAX_INPUTS_ATTR:  # e.g. a merge of thousands of shards: keep a digest of the map
            attrs["inputs_count"] = len(inputs)
            blob = json.dumps({"sha256_of_inputs_map": hashlib.sha256(blob.encode()).hexdigest()})
        attrs[INPUTS_KEY] = blob
    return attrs


# --- content checksums ----------------------------------------------------------------------------

def _update_with_array(hasher, values: np.ndarray) -> None:
    """Feed an array's bytes (C order) to a hash; variable-length objects by their encoded repr."""
    values = np.ascontiguousarray(values)
    if values.dtype.hasobject:
        for item in values.reshape(-1):
            hasher.update(item if isinstance(item, bytes) else repr(item).encode())
            hasher.update(b"\0")
    else:
        hasher.update(values.reshape(-1).view(np.uint8))


def _dataset_line(name: str, dtype: np.dtype, shape: tuple, digest: str) -> bytes:
    return f"{name}\0{np.dtype(dtype).str}\0{tuple(int(s) for s in shape)}\0{digest}\n".encode()


def _update_with_attributes(outer, attrs) -> None:
    """Add the content attributes a file has to its digest, in sorted name order."""
    for name in sorted(k for k in attrs.keys() if k in CONTENT_ATTRS):
        value = np.asarray(attrs[name])
        inner = hashlib.sha256()
        _update_with_array(inner, value)
        outer.update(b"@" + _dataset_line(name, value.dtype, value.shape, inner.hexdigest()))


def hdf5_content_digest(handle: h5py.File) -> str:
    """sha256 over every dataset (name, dtype, shape, bytes) in sorted name order, read in blocks,
    then over the content attributes."""
    names = []
    handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    outer = hashlib.sha256()
    for name in sorted(names):
        dataset = handle[name]
        inner = hashlib.sha256()
        if dataset.shape is None:  # an empty (null) dataspace holds no data
            pass
        elif dataset.ndim == 0:
            _update_with_array(inner, np.asarray(dataset[()]))
        else:
            row_bytes = max(1, dataset.dtype.itemsize * int(np.prod(dataset.shape[1:], dtype=np.int64)))
            rows = max(1, HASH_BLOCK_BYTES // row_bytes)
            if dataset.chunks:  # whole chunks per read
                rows = max(dataset.chunks[0], rows - rows % dataset.chunks[0])
            for start in range(0, dataset.shape[0], rows):
                _update_with_array(inner, dataset[start:start + rows])
        outer.update(_dataset_line(name, dataset.dtype, dataset.shape or (), inner.hexdigest()))
    _update_with_attributes(outer, handle.attrs)
    return outer.hexdigest()


def file_sha256(path, offset: int = 0) -> str:
    """sha256 of a file's bytes from `offset` on, read in blocks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as stream:
        stream.seek(offset)
        while block := stream.read(8 << 20):
            hasher.update(block)
    return hasher.hexdigest()


@contextlib.contextmanager
def _sealed_hdf5(path) -> Iterator[h5py.File]:
    """Write an HDF5 file atomically; once it is complete, seal it: the sha256 of every byte after
    the user block, written into the user block. A reader checks the seal before HDF5 parses
    anything, because libhdf5 can crash the process (segfault) on a damaged attribute or header."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=SEAL_BYTES) as handle:
            yield handle
        seal = _SEAL_PREFIX + file_sha256(tmp, SEAL_BYTES).encode()
        with open(tmp, "r+b") as stream:
            stream.write(seal)


def check_seal(path) -> None:
    """Refuse an HDF5 artifact whose bytes changed after it was written (any byte: data, attributes,
    headers), reading it as plain bytes, never through HDF5."""
    with open(path, "rb") as stream:
        block = stream.read(SEAL_BYTES)
    if not block.startswith(_SEAL_PREFIX):
        raise ArtifactError(f"{path}: no port-pipeline seal: not written by this version of the pipeline, "
                            f"or its first bytes were damaged; rebuild it")
    recorded = block[len(_SEAL_PREFIX):len(_SEAL_PREFIX) + 64].decode("ascii", "replace")
    actual = file_sha256(path, SEAL_BYTES)
    if recorded != actual:
        raise _mismatch(path, recorded, actual)


def _mismatch(path, recorded: str, actual: str) -> ArtifactError:
    return ArtifactError(f"{path}: content checksum mismatch: file changed after it was written "
                         f"(recorded {recorded[:16]}, content {actual[:16]})")


def verify_hdf5(path) -> str:
    """The content digest of an HDF5 artifact, after checking that no byte changed since it was
    written and that the recorded digest is its content's (the seal alone would pass a file edited
    with h5py and resealed: its content_sha256 would name content it no longer holds)."""
    check_seal(path)
    with open_hdf5(path) as handle:
        recorded = handle.attrs.get(CHECKSUM_KEY)
        if recorded is None:
            raise ArtifactError(f"{path}: no '{CHECKSUM_KEY}' attribute: not a port-pipeline artifact")
        actual = hdf5_content_digest(handle)
    if actual != str(recorded):
        raise ArtifactError(f"{path}: '{CHECKSUM_KEY}' is not the digest of its content (recorded {str(recorded)[:16]}, "
                            f"content {actual[:16]}): edited after it was written; rebuild it")
    return actual


def artifact_digest(path) -> str:
    """The checksum of one stage input: HDF5 content (verified against its seal), else the
    file's sha256 (checkpoints are verified when loaded), or a saved model directory's files in
    sorted order (or a fetched folder's). Any other directory is refused here, before the stage runs."""
    path = Path(path)
    if path.is_dir() and not any((path / marker).is_file() for marker in (MODEL_DIRECTORY_MARKER, FETCHED_MARKER)):
        raise ArtifactError(f"{path}: is a directory, expected a file (or a saved model directory with "
                            f"{MODEL_DIRECTORY_MARKER})")
    if path.is_dir():
        hasher = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            hasher.update(f"{item.relative_to(path).as_posix()}\0{file_sha256(item)}\n".encode())
        return hasher.hexdigest()
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    with open(path, "rb") as stream:
        head = stream.read(SEAL_BYTES + len(_HDF5_SIGNATURE))
    is_hdf5 = head.startswith((_SEAL_PREFIX, _HDF5_SIGNATURE)) or head[SEAL_BYTES:] == _HDF5_SIGNATURE
    return verify_hdf5(path) if is_hdf5 else file_sha256(path)


@contextlib.contextmanager
def verified_inputs(paths) -> Iterator[dict[str, str]]:
    """Verify every input of a job, then record their checksums in the provenance of its outputs."""
    started = time.time()
    checksums = {str(p): artifact_digest(p) for p in paths}
    if checksums:
        size = sum(_size(Path(p)) for p in checksums) / 1e6
        log.info("verified %d input(s), %.1f MB, in %.1f s", len(checksums), size, time.time() - started)
    token = _input_checksums.set(checksums)
    try:
        yield checksums
    finally:
        _input_checksums.reset(token)


def _update_with_object(hasher, obj) -> None:
    """Hash a checkpoint's structure: tensors by dtype, shape and bytes; mappings in sorted key order."""
    import torch

    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu().contiguous()
        hasher.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, np.ndarray):
        hasher.update(f"A{obj.dtype.str}{obj.shape}".encode())
        _update_with_array(hasher, obj)
    elif isinstance(obj, Mapping):
        hasher.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            hasher.update(f"K{key!r}".encode())
            _update_with_object(hasher, obj[key])
    elif isinstance(obj, (list, tuple)):
        hasher.update(f"L{len(obj)}".encode())
        for item in obj:
            _update_with_object(hasher, item)
    else:
        hasher.update(f"V{type(obj).__name__}:{obj!r}".encode())


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def object_digest(obj) -> str:
    hasher = hashlib.sha256()
    _update_with_object(hasher, obj)
    return hasher.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success."""
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        # A job killed with SIGKILL leaves its temporary file behind; it never looks finished (a
        # hidden .tmp name) and the rerun (Snakemake never runs two jobs for one output) removes it.
        for stale in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as err:  # a read-only results folder, a file where a folder should be
        raise ArtifactError(f"{final}: cannot write in {final.parent} ({err.strerror or err})") from err
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        umask = os.umask(0o022)  # the umask can only be read by setting it
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        yield tmp_path
        _fsync(tmp_path)  # the data reaches the disk before the name does (node crashes)
        os.replace(tmp_path, final)
        _fsync(final.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    if not Path(path).is_file():
        raise ArtifactError(f"{path}: file not found")
    return pd.read_csv(path)


def save_torch(obj, path: str | os.PathLike) -> None:
    """Save a checkpoint; a dict gets its content digest (and the job's input checksums) added."""
    import torch

    if isinstance(obj, Mapping):
        obj = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
        inputs = _input_checksums.get()
        if inputs and INPUTS_KEY not in obj:
            obj[INPUTS_KEY] = dict(inputs)
        obj[CHECKSUM_KEY] = object_digest(obj)
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except (OSError, RuntimeError) as err:  # a full disk reaches torch's zip writer as "unexpected pos"
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
            free = shutil.disk_usage(tmp.parent).free / 1e6
            raise ArtifactError(f"{path}: cannot write the checkpoint ({reason}; {free:.1f} MB free on its "
                                f"file system)") from err


def load_torch(path: str | os.PathLike) -> dict:
    """Load a checkpoint without unpickling arbitrary objects; refuse one whose content no longer
    matches its recorded digest. The digest key is removed from what is returned."""
    import torch

    if Path(path).is_dir():
        raise ArtifactError(f"{path}: is a directory, expected a checkpoint file")
    if not Path(path).is_file():
        raise ArtifactError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        # torch's own message suggests weights_only=False, i.e. running the file's code: not repeated
        raise ArtifactError(f"{path}: not a readable checkpoint: not a torch file, damaged, or holding objects "
                            f"that only unpickling code could rebuild ({type(err).__name__})") from err
    if isinstance(checkpoint, dict) and CHECKSUM_KEY in checkpoint:
        recorded = str(checkpoint.pop(CHECKSUM_KEY))
        actual = object_digest(checkpoint)
        if recorded != actual:
            raise _mismatch(path, recorded, actual)
    return checkpoint


def file_identity(path) -> list:
    """Path, size and modification time: enough to tell a regenerated input from the same one."""
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


class ResumeCheckpoint:
    """The saved progress of a long job (training epochs, certified images), so that a killed job
    resumes where it stopped. It is resumed only by the same settings, seed and input files: a
    rerun after an upstream change (say, a new synthetic set) starts afresh instead of reusing
    stale progress. Saved atomically; deleted when the job finishes, so a forced rerun (-R) starts
    again. With no path, nothing is saved or resumed."""

    def __init__(self, path, settings: Mapping, seed: int, inputs):
        self.path = None if path is None else Path(path)
        self.run_hash = settings_hash({"settings": settings, "seed": seed,
                                       "inputs": [file_identity(p) for p in inputs if p is not None]})

    def load(self) -> dict | None:
        """The progress this same job saved, or None (no checkpoint, or one of other settings or inputs)."""
        if self.path is None or not self.path.is_file():
            return None
        saved = load_torch(self.path)
        if saved.get("run_hash") != self.run_hash:
            log.warning("ignoring %s: it was written with other settings or inputs", self.path)
            return None
        log.info("resuming from %s", self.path)
        return saved["state"]

    def save(self, state: dict) -> None:
        if self.path is not None:
            save_torch({"run_hash": self.run_hash, "state": state}, self.path)

    def finish(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class ImageWriter:
    """Append batches to a chunked uint8 NHWC `images` dataset, plus aligned 1-D/2-D arrays.

    Used as a context manager: the file appears at `path` only if the block completes.
    """

    def __init__(self, path: str | os.PathLike, image_shape: tuple[int, int, int], attrs: Mapping,
                 chunk_images: int = CHUNK_IMAGES):
        self.path = Path(path)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.attrs = dict(attrs)
        self.chunk_images = chunk_images
        self._stack = contextlib.ExitStack()
        self._file: h5py.File | None = None
        self._hashers: dict[str, "hashlib._Hash"] = {}
        self.count = 0

    def __enter__(self) -> "ImageWriter":
        try:
            self._file = self._stack.enter_context(_sealed_hdf5(self.path))
            self._file.create_dataset(
                "images", shape=(0, *self.image_shape), maxshape=(None, *self.image_shape),
                dtype=np.uint8, chunks=(self.chunk_images, *self.image_shape),
            )
            for key, value in self.attrs.items():
                self._file.attrs[key] = value
        except BaseException:
            # `with` calls __exit__ only after a successful __enter__: close the file and
            # remove the temporary file here, or it would outlive the failed write.
            self._stack.__exit__(*sys.exc_info())
            raise
        return self

    def append(self, images: np.ndarray, **arrays: np.ndarray) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
            raise ArtifactError(
                f"{self.path}: expected uint8 images of shape (N, {', '.join(map(str, self.image_shape))}), "
                f"got {images.dtype} {images.shape}")
        n = len(images)
        start = self.count
        self._grow("images", images, start)
        for key, values in arrays.items():
            values = np.asarray(values)
            if len(values) != n:
                raise ArtifactError(f"{self.path}: '{key}' has {len(values)} rows for {n} images")
            if key not in self._file:
                self._file.create_dataset(
                    key, shape=(0, *values.shape[1:]), maxshape=(None, *values.shape[1:]),
                    dtype=values.dtype, chunks=(self.chunk_images, *values.shape[1:]))
            self._grow(key, values, start)
        self.count += n

    def _grow(self, key: str, values: np.ndarray, start: int) -> None:
        dataset = self._file[key]
        values = np.asarray(values, dtype=dataset.dtype)  # hash exactly what is stored
        dataset.resize(start + len(values), axis=0)
        dataset[start:start + len(values)] = values
        # rows arrive in order, so each dataset's digest streams along with the writes
        _update_with_array(self._hashers.setdefault(key, hashlib.sha256()), values)

    def __exit__(self, *exc) -> bool:
        if exc[0] is None:
            outer = hashlib.sha256()
            for name in sorted(self._file):  # every dataset here is a top-level, appended one
                dataset = self._file[name]
                inner = self._hashers.get(name, hashlib.sha256())
                outer.update(_dataset_line(name, dataset.dtype, dataset.shape, inner.hexdigest()))
            _update_with_attributes(outer, self._file.attrs)  # read back: hash what is stored
            self._file.attrs[CHECKSUM_KEY] = outer.hexdigest()
        return self._stack.__exit__(*exc)


def write_images(path, images: np.ndarray, attrs: Mapping, **arrays: np.ndarray) -> None:
    """Write a whole image set at once (see ImageWriter)."""
    images = np.asarray(images)
    with ImageWriter(path, images.shape[1:], attrs) as writer:
        writer.append(images, **arrays)


def write_arrays(path, attrs: Mapping, **arrays: np.ndarray) -> None:
    """Write per-image arrays without images (labels, probabilities, masks, scores)."""
    with _sealed_hdf5(path) as handle:
        for key, values in arrays.items():
            values = np.asarray(values)
            # chunked along N (an empty array cannot be chunked: HDF5 refuses chunks larger than the data)
            chunks = (min(CHUNK_IMAGES, len(values)), *values.shape[1:]) if values.ndim and values.size else None
            handle.create_dataset(key, data=values, chunks=chunks)
        for key, value in attrs.items():
            handle.attrs[key] = value
        handle.attrs[CHECKSUM_KEY] = hdf5_content_digest(handle)  # small arrays: read back, hash what is stored


_DAMAGE = (OSError, RuntimeError, KeyError, ValueError, TypeError)  # what h5py raises on damaged files


@contextlib.contextmanager
def open_hdf5(path) -> Iterator[h5py.File]:
    """Open an HDF5 file for reading; any failure to open or read it inside the block (a damaged
    header, attribute or data block) becomes one ArtifactError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path}: is a directory, expected an HDF5 file")
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        handle = h5py.File(path, "r")
    except _DAMAGE as err:
        raise ArtifactError(f"{path}: not a readable HDF5 file ({err})") from err
    try:
        with handle:
            yield handle
    except ArtifactError:
        raise
    except _DAMAGE as err:
        raise ArtifactError(f"{path}: damaged HDF5 file ({type(err).__name__}: {err})") from err


def read_arrays(path, *keys: str) -> dict[str, np.ndarray]:
    """Read named per-image arrays in full (small metadata: labels, masks, probabilities)."""
    with open_hdf5(path) as handle:
        missing = [k for k in keys if k not in handle]
        if missing:
            raise ArtifactError(f"{path}: missing dataset(s) {', '.join(missing)}")
        return {k: handle[k][()] for k in keys}


def read_attrs(path) -> dict:
    with open_hdf5(path) as handle:
        return dict(handle.attrs)


def dataset_of(path) -> str | None:
    """The dataset name an artifact descends from, carried down the chain of stages."""
    value = read_attrs(path).get("dataset")
    return None if value is None else str(value)


def validate_image_set(path, num_classes: int | None = None, require_labels: bool = True,
                       image_shape: tuple | None = None) -> int:
    """Check an image set's structure cheaply (no full read of images). Returns N."""
    with open_hdf5(path) as handle:
        if "images" not in handle:
            raise ArtifactError(f"{path}: no 'images' dataset")
        images = handle["images"]
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ArtifactError(f"{path}: 'images' must be uint8 NHWC, got {images.dtype} {images.shape}")
        if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
            raise ArtifactError(f"{path}: images have shape {images.shape[1:]}, expected {tuple(image_shape)}")
        n = images.shape[0]
        if "labels" in handle:
            labels = handle["labels"][()]
            if len(labels) != n:
                raise ArtifactError(f"{path}: {n} images but {len(labels)} labels")
            check_labels(labels, num_classes, path)
        elif require_labels:
            raise ArtifactError(f"{path}: no 'labels' dataset")
        return n


def check_labels(labels: np.ndarray, num_classes: int | None, source) -> None:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ArtifactError(f"{source}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if num_classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ArtifactError(
            f"{source}: labels must lie in [0, {num_classes - 1}], found {labels.min()}..{labels.max()}")


def read_image_set(path, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a (small, real) labelled image set fully into memory."""
    validate_image_set(path, num_classes)
    with open_hdf5(path) as handle:
        return handle["images"][()], handle["labels"][()].astype(np.int64)


def shape_text(shape) -> str:
    """An image geometry for messages: the last three entries of a shape, as HxWxC."""
    return "x".join(str(int(s)) for s in tuple(shape)[-3:]) + " (HxWxC)"


def image_set_shape(path) -> tuple[int, int, int]:
    """(H, W, C) of an image set's images, from its header."""
    with open_hdf5(path) as handle:
        if "images" not in handle or handle["images"].ndim != 4:
            raise ArtifactError(f"{path}: no 4-D 'images' dataset")
        return tuple(int(s) for s in handle["images"].shape[1:])


def image_set_length(path) -> int:
    with open_hdf5(path) as handle:
        if "images" not in handle:
            raise ArtifactError(f"{path}: no 'images' dataset")
        return handle["images"].shape[0]


def chunk_spans(start: int, stop: int, chunk: int, min_size: int) -> Iterator[tuple[int, int]]:
    """Consecutive ranges covering [start, stop) whose inner edges fall on chunk boundaries, each
    a whole number of chunks holding at least `min_size` images: every chunk is read once."""
    span = -(-max(min_size, 1) // chunk) * chunk
    edge = start - start % chunk
    while edge < stop:
        yield max(edge, start), min(edge + span, stop)
        edge += span


def iter_image_blocks(path, block: int = CHUNK_IMAGES, start: int = 0, stop: int | None = None):
    """Yield (offset, uint8 images) in order, `block` images at a time (the last may be shorter),
    over [start, stop). Reads go by whole HDF5 chunks whatever the block size, so a block that
    straddles two chunks does not read either twice."""
    with open_hdf5(path) as handle:
        images = handle["images"]
        stop = images.shape[0] if stop is None else min(stop, images.shape[0])
        chunk = images.chunks[0] if images.chunks else block
        pending, offset = images[start:start], start
        for read_start, read_stop in chunk_spans(start, stop, chunk, block):
            pending = np.concatenate([pending, images[read_start:read_stop]]) if len(pending) else \
                images[read_start:read_stop]
            while len(pending) >= block or (read_stop == stop and len(pending)):
                yield offset, pending[:block]
                offset += min(block, len(pending))
                pending = pending[block:]


def copy_image_subset(source, writer: "ImageWriter", mask: np.ndarray, **per_image: np.ndarray) -> int:
    """Append the images of `source` where `mask` is true to `writer`, block by block (bounded
    memory), with `per_image` arrays (indexed by global image index) and their source_index."""
    copied = 0
    for offset, block in iter_image_blocks(source):
        take = mask[offset:offset + len(block)]
        if take.any():
            index = offset + np.flatnonzero(take)
            writer.append(block[take], source_index=index, **{k: v[index] for k, v in per_image.items()})
            copied += len(index)
    return copied
