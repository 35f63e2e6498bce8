"""HDF5 image sets, atomic writes, provenance and validation (port.artifacts)."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from port.artifacts import (ImageWriter, atomic_path, chunk_spans, image_set_length, iter_image_blocks, provenance,
                            read_arrays, read_attrs, read_image_set, settings_hash, validate_image_set, write_arrays,
                            write_images)
from port.errors import ArtifactError


class Boom(RuntimeError):
    pass


def _images(n, shape=(6, 5, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _leftovers(directory):
    """Temporary files (atomic_path names them `.<target>.<random>.tmp`)."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp") or p.name.startswith("."))


# --- round trip and provenance ------------------------------------------------------------------

def test_write_images_round_trip_with_provenance(tmp_path):
    path = tmp_path / "set.h5"
    images = _images(37)
    labels = np.arange(37, dtype=np.int64) % 4
    attrs = provenance("prepare_data", {"b": 2, "a": 1}, seed=7, dataset="toy", num_classes=4, skipped=None)
    write_images(path, images, attrs, labels=labels)

    got_images, got_labels = read_image_set(path, num_classes=4)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.int64
    assert validate_image_set(path, num_classes=4, image_shape=(6, 5, 3)) == 37
    assert image_set_length(path) == 37

    stored = read_attrs(path)
    assert {"stage", "params_hash", "params", "versions", "seed"} <= set(stored)
    assert stored["stage"] == "prepare_data"
    assert stored["params_hash"] == settings_hash({"a": 1, "b": 2})
    assert json.loads(stored["params"]) == {"a": 1, "b": 2}
    assert int(stored["seed"]) == 7
    assert stored["dataset"] == "toy" and int(stored["num_classes"]) == 4
    assert "skipped" not in stored  # None-valued extras are dropped
    versions = json.loads(stored["versions"])
    assert {"numpy", "h5py", "torch"} <= set(versions)
    assert versions["numpy"] == np.__version__
    assert versions["h5py"] == h5py.__version__


def test_provenance_records_the_device_and_the_determinism_settings(monkeypatch):
    import torch

    from port.artifacts import cpu_model

    attrs = provenance("train", {"lr": 0.1}, seed=1)
    assert attrs["device"] == f"cpu: {cpu_model()}" and cpu_model()  # CUDA never started in this process
    determinism = json.loads(attrs["determinism"])
    assert determinism == {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                           "cudnn_benchmark": torch.backends.cudnn.benchmark,
                           "cudnn_deterministic": torch.backends.cudnn.deterministic,
                           "num_threads": torch.get_num_threads()}
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", not torch.backends.cudnn.benchmark)
    assert json.loads(provenance("train")["determinism"])["cudnn_benchmark"] == torch.backends.cudnn.benchmark
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "NVIDIA H100 80GB HBM3")
    assert provenance("train")["device"] == "cuda: NVIDIA H100 80GB HBM3"


def test_provenance_does_not_import_torch_for_jobs_that_never_did():
    code = ("import json, sys; from port.artifacts import provenance; attrs = provenance('merge'); "
            "print(json.dumps(['torch' in sys.modules, attrs['device'][:4], json.loads(attrs['determinism'])]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == [False, "cpu:", {"torch": "not imported"}]


def test_provenance_without_seed_has_no_seed_attr():
    assert "seed" not in provenance("filter", {"threshold": 0.9})
    assert provenance("x", seed=0)["seed"] == 0


def test_image_writer_appends_in_batches_chunked_along_n(tmp_path):
    path = tmp_path / "chunked.h5"
    images = _images(50, shape=(4, 4, 1))
    with ImageWriter(path, (4, 4, 1), provenance("sample", {}, 1), chunk_images=8) as writer:
        for start in range(0, 50, 12):  # batches that do not line up with chunks
            block = images[start:start + 12]
            writer.append(block, labels=np.arange(start, start + len(block)),
                          probs=np.full((len(block), 3), 0.5, dtype=np.float32))
        assert writer.count == 50
    with h5py.File(path, "r") as handle:
        assert handle["images"].dtype == np.uint8
        assert handle["images"].shape == (50, 4, 4, 1)
        assert handle["images"].chunks == (8, 4, 4, 1)
        assert handle["labels"].chunks == (8,)
        assert handle["probs"].shape == (50, 3)
        np.testing.assert_array_equal(handle["images"][()], images)
        np.testing.assert_array_equal(handle["labels"][()], np.arange(50))
    blocks = list(iter_image_blocks(path, block=16))
    assert [offset for offset, _ in blocks] == [0, 16, 32, 48]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), images)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("start, stop, block", [(0, 50, 16), (5, 50, 8), (9, 41, 3), (7, 8, 20), (16, 48, 10)])
def test_image_blocks_read_whole_chunks_once(start, stop, block):
    """Blocks of any size come from reads whose inner edges are chunk (8-image) boundaries, each
    chunk read once (issue 12: 1000-image blocks over 1024-image chunks read most chunks twice)."""
    spans = list(chunk_spans(start, stop, chunk=8, min_size=block))
    assert spans[0][0] == start and spans[-1][1] == stop
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, so no chunk twice
    assert all(a % 8 == 0 for a, _ in spans[1:]) and all(b % 8 == 0 for _, b in spans[:-1])
    assert all(b - a >= min(block, stop - start) or b == stop or a == start for a, b in spans)


def test_image_blocks_any_block_size_and_range(tmp_path):
    images = np.arange(50 * 4, dtype=np.uint8).reshape(50, 2, 2, 1)
    path = tmp_path / "set.h5"
    with ImageWriter(path, (2, 2, 1), {}, chunk_images=8) as writer:
        writer.append(images)
    for start, stop, block in [(0, 50, 16), (5, 50, 8), (9, 41, 3), (7, 8, 20), (3, 3, 4)]:
        blocks = list(iter_image_blocks(path, block, start, stop))
        assert [offset for offset, _ in blocks] == list(range(start, stop, block))
        assert all(len(b) == min(block, stop - offset) for offset, b in blocks)
        got = np.concatenate([b for _, b in blocks]) if blocks else images[:0]
        np.testing.assert_array_equal(got, images[start:stop])


def test_image_writer_rejects_wrong_dtype_shape_and_row_count(tmp_path):
    path = tmp_path / "bad.h5"
    with pytest.raises(ArtifactError, match="uint8"):
        with ImageWriter(path, (4, 4, 1), {}) as writer:
            writer.append(np.zeros((3, 4, 4, 1), dtype=np.float32))
    with pytest.raises(ArtifactError, match="uint8"):
        with ImageWriter(path, (4, 4, 1), {}) as writer:
            writer.append(np.zeros((3, 4, 4, 3), dtype=np.uint8))
    with pytest.raises(ArtifactError, match="labels"):
        with ImageWriter(path, (4, 4, 1), {}) as writer:
            writer.append(np.zeros((3, 4, 4, 1), dtype=np.uint8), labels=np.zeros(2, dtype=np.int64))
    assert not path.exists()
    assert _leftovers(tmp_path) == []


def test_write_arrays_round_trip(tmp_path):
    path = tmp_path / "arrays.h5"
    probs = np.random.default_rng(1).random((20, 3)).astype(np.float32)
    write_arrays(path, provenance("pseudo_label", {"k": 3}), labels=np.arange(20), probs=probs)
    got = read_arrays(path, "labels", "probs")
    np.testing.assert_array_equal(got["labels"], np.arange(20))
    np.testing.assert_array_equal(got["probs"], probs)
    assert read_attrs(path)["stage"] == "pseudo_label"
    with pytest.raises(ArtifactError, match="missing dataset.*keep"):
        read_arrays(path, "labels", "keep")


# --- atomic writes ------------------------------------------------------------------------------

def test_exception_inside_image_writer_leaves_nothing(tmp_path):
    path = tmp_path / "images.h5"
    with pytest.raises(Boom):
        with ImageWriter(path, (4, 4, 1), provenance("sample", {}, 0)) as writer:
            writer.append(np.zeros((5, 4, 4, 1), dtype=np.uint8), labels=np.zeros(5, dtype=np.int64))
            raise Boom("killed mid-write")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_exception_inside_image_writer_keeps_earlier_file(tmp_path):
    path = tmp_path / "images.h5"
    write_images(path, _images(10, (4, 4, 1)), provenance("sample", {}, 0), labels=np.zeros(10, dtype=np.int64))
    before = path.read_bytes()
    with pytest.raises(Boom):
        with ImageWriter(path, (4, 4, 1), provenance("sample", {}, 1)) as writer:
            writer.append(_images(3, (4, 4, 1), seed=5), labels=np.ones(3, dtype=np.int64))
            raise Boom
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []
    assert validate_image_set(path) == 10


def test_failure_while_opening_image_writer_leaves_no_temp_file(tmp_path):
    path = tmp_path / "images.h5"
    # h5py cannot store a dict as an attribute: __enter__ fails after the temp file exists.
    writer = ImageWriter(path, (4, 4, 1), {"bad": {"nested": 1}})
    with pytest.raises(TypeError):
        with writer:
            pass  # pragma: no cover
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_exception_leaves_no_file_and_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.csv"
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp != target
            tmp.write_text("half written")
            raise Boom
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_path_exception_keeps_existing_target(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("earlier, complete")
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("new, incomplete")
            raise Boom
    assert target.read_text() == "earlier, complete"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_success_replaces_target(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the block completes
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_writes_respect_the_umask(tmp_path):
    import os

    previous = os.umask(0o027)
    try:
        write_images(tmp_path / "a.h5", _images(2), {}, labels=np.zeros(2, dtype=np.int64))
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(previous)
    for name in ("a.h5", "b.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name  # like open(): 0o666 & ~umask


# --- validation errors name the file ------------------------------------------------------------

def _raw_set(path, images, labels=None):
    with h5py.File(path, "w") as handle:
        handle.create_dataset("images", data=images)
        if labels is not None:
            handle.create_dataset("labels", data=labels)
    return path


def test_validate_missing_file(tmp_path):
    path = tmp_path / "absent.h5"
    with pytest.raises(ArtifactError, match="absent.h5.*not found"):
        validate_image_set(path)


def test_validate_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("this is not an HDF5 file\n" * 10)
    with pytest.raises(ArtifactError) as info:
        validate_image_set(path)
    assert str(path) in str(info.value)


def test_validate_truncated_file(tmp_path):
    path = tmp_path / "truncated.h5"
    write_images(path, _images(200, (8, 8, 3)), provenance("x"), labels=np.zeros(200, dtype=np.int64))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])
    with pytest.raises(ArtifactError) as info:
        validate_image_set(path)
    assert str(path) in str(info.value)


def test_validate_wrong_dtype(tmp_path):
    path = _raw_set(tmp_path / "float.h5", np.zeros((4, 2, 2, 1), dtype=np.float32), np.zeros(4, dtype=np.int64))
    with pytest.raises(ArtifactError, match="float.h5.*uint8"):
        validate_image_set(path)


def test_validate_wrong_rank(tmp_path):
    path = _raw_set(tmp_path / "flat.h5", np.zeros((4, 4), dtype=np.uint8), np.zeros(4, dtype=np.int64))
    with pytest.raises(ArtifactError, match="flat.h5.*NHWC"):
        validate_image_set(path)


def test_validate_labels_out_of_range(tmp_path):
    path = tmp_path / "range.h5"
    write_images(path, _images(5, (2, 2, 1)), {}, labels=np.array([0, 1, 2, 5, 1]))
    assert validate_image_set(path) == 5  # no class count given: nothing to check against
    with pytest.raises(ArtifactError, match=r"range.h5.*\[0, 2\]"):
        validate_image_set(path, num_classes=3)
    with pytest.raises(ArtifactError, match="range.h5"):
        read_image_set(path, num_classes=3)


def test_validate_negative_labels(tmp_path):
    path = tmp_path / "neg.h5"
    write_images(path, _images(3, (2, 2, 1)), {}, labels=np.array([0, -1, 1]))
    with pytest.raises(ArtifactError, match="neg.h5"):
        validate_image_set(path, num_classes=3)


def test_validate_non_integer_labels(tmp_path):
    path = _raw_set(tmp_path / "flt.h5", np.zeros((3, 2, 2, 1), dtype=np.uint8), np.zeros(3, dtype=np.float32))
    with pytest.raises(ArtifactError, match="flt.h5.*integer"):
        validate_image_set(path)


def test_validate_length_mismatch(tmp_path):
    path = _raw_set(tmp_path / "mismatch.h5", np.zeros((10, 2, 2, 1), dtype=np.uint8), np.zeros(9, dtype=np.int64))
    with pytest.raises(ArtifactError, match="mismatch.h5.*10 images but 9 labels"):
        validate_image_set(path)


def test_validate_missing_datasets(tmp_path):
    no_labels = _raw_set(tmp_path / "nolabels.h5", np.zeros((3, 2, 2, 1), dtype=np.uint8))
    with pytest.raises(ArtifactError, match="nolabels.h5.*labels"):
        validate_image_set(no_labels)
    assert validate_image_set(no_labels, require_labels=False) == 3
    no_images = tmp_path / "noimages.h5"
    write_arrays(no_images, {}, labels=np.zeros(3, dtype=np.int64))
    with pytest.raises(ArtifactError, match="noimages.h5.*images"):
        validate_image_set(no_images)


def test_validate_wrong_image_shape(tmp_path):
    path = tmp_path / "shape.h5"
    write_images(path, _images(3, (4, 4, 1)), {}, labels=np.zeros(3, dtype=np.int64))
    with pytest.raises(ArtifactError, match="shape.h5"):
        validate_image_set(path, image_shape=(8, 8, 1))


# --- settings hash ------------------------------------------------------------------------------

def test_settings_hash_ignores_key_order():
    a = {"lr": 0.1, "epochs": 3, "threat": {"norm": "linf", "eps": 0.1}}
    b = {"threat": {"eps": 0.1, "norm": "linf"}, "epochs": 3, "lr": 0.1}
    assert settings_hash(a) == settings_hash(b)
    assert len(settings_hash(a)) == 16


def test_settings_hash_changes_with_values():
    a = {"lr": 0.1, "threat": {"norm": "linf", "eps": 0.1}}
    assert settings_hash(a) != settings_hash({"lr": 0.2, "threat": {"norm": "linf", "eps": 0.1}})
    assert settings_hash(a) != settings_hash({"lr": 0.1, "threat": {"norm": "linf", "eps": 0.2}})
    assert settings_hash({}) != settings_hash({"lr": None})
