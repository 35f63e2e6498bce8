"""The audit of synthetic sets against the real data (port.audit): exact block search, known-answer
near-duplicates, bounded memory, and the selection that leaves test near-duplicates out."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import torch

from port import audit
from port.artifacts import ImageWriter, provenance, read_arrays, read_attrs, write_arrays, write_images
from port.errors import ArtifactError
from port.models import build_model, model_spec, save_model
from port.selection import select_images, without_test_duplicates

SHAPE = (8, 8, 1)
THRESHOLD = 0.05


def _random_images(n: int, seed: int, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _real_set(path, images: np.ndarray) -> None:
    labels = np.arange(len(images)) % 10
    write_images(path, images, provenance("prepare", dataset="toy", num_classes=10, channel_mean=[0.5] * images.shape[-1],
                                          channel_std=[0.25] * images.shape[-1]), labels=labels)


def _lanet(path, shape=SHAPE) -> None:
    torch.manual_seed(0)
    spec = model_spec("small_cnn", shape[-1], 10, shape[0], [0.5] * shape[-1], [0.25] * shape[-1])
    save_model(build_model(**spec), spec, path)


def _moved(images: np.ndarray, step: int) -> np.ndarray:
    """Every pixel moved by exactly `step` grey levels, towards mid-grey (no clipping): linf and
    rms distance step/255 from the original."""
    wide = images.astype(np.int64)
    return np.where(wide < 128, wide + step, wide - step).astype(np.uint8)


@pytest.mark.parametrize("space", audit.SPACES)
def test_block_search_equals_brute_force_cdist(space):
    generator = torch.Generator().manual_seed(1)
    queries, references = torch.rand(57, 24, generator=generator), torch.rand(83, 24, generator=generator)
    if space == "lanet_cosine":
        queries, references = (torch.nn.functional.normalize(x, dim=1) for x in (queries, references))
        brute = 1.0 - queries.double() @ references.double().T
    else:
        p = math.inf if space == "linf" else 2.0
        brute = torch.cdist(queries.double(), references.double(), p=p, compute_mode="donot_use_mm_for_euclid_dist")
        brute = brute / (math.sqrt(queries.shape[1]) if space == "rms" else 1.0)
    distance, index = audit.nearest(queries, references, space, block=10)  # 9 blocks, the last one short
    expected_distance, expected_index = brute.min(1)
    torch.testing.assert_close(index, expected_index, rtol=0, atol=0)
    torch.testing.assert_close(distance.double(), expected_distance, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Real test and training sets of random images; a synthetic set of exact copies of 6 test
    images, noisy copies of 6 (every pixel 4 levels off: rms 0.016), 6 test images moved by a known
    larger distance (every pixel 64 levels off: rms 0.25), exact copies of 5 training images, and 7
    fresh random images."""
    tmp_path = tmp_path_factory.mktemp("planted")
    test, train = _random_images(40, 1), _random_images(60, 2)
    _real_set(tmp_path / "test.h5", test)
    _real_set(tmp_path / "train.h5", train)
    _lanet(tmp_path / "lanet.pt")
    groups = {"test_copy": test[:6], "test_noisy": _moved(test[6:12], 4), "test_far": _moved(test[12:18], 64),
              "train_copy": train[:5], "fresh": _random_images(7, 3)}
    names = np.concatenate([[name] * len(images) for name, images in groups.items()])
    write_images(tmp_path / "images.h5", np.concatenate(list(groups.values())),
                 provenance("sample", dataset="toy"))
    outputs = {"out_path": tmp_path / "audit.h5", "out_csv": tmp_path / "audit.csv", "out_png": tmp_path / "audit.png"}
    table = audit.audit_synthetic(images_path=tmp_path / "images.h5", train_path=tmp_path / "train.h5",
                                  test_path=tmp_path / "test.h5", lanet_path=tmp_path / "lanet.pt", generator="toy",
                                  test_threshold=THRESHOLD, train_threshold=THRESHOLD, **outputs)
    return names, table, outputs, tmp_path


def test_planted_copies_are_flagged_and_a_set_at_a_larger_distance_never(planted):
    names, table, outputs, _ = planted
    arrays = read_arrays(outputs["out_path"], "test_duplicate", "train_duplicate", "test_rms_distance",
                         "test_rms_index", "test_linf_distance", "train_rms_index")
    test_near = np.isin(names, ["test_copy", "test_noisy"])
    np.testing.assert_array_equal(arrays["test_duplicate"], test_near)
    np.testing.assert_array_equal(arrays["train_duplicate"], names == "train_copy")
    # each plant is matched to the test image it was made from, at the distance it was made at
    np.testing.assert_array_equal(arrays["test_rms_index"][:18], np.arange(18))
    np.testing.assert_array_equal(arrays["train_rms_index"][names == "train_copy"], np.arange(5))
    np.testing.assert_allclose(arrays["test_rms_distance"][names == "test_copy"], 0.0, atol=1e-6)
    np.testing.assert_allclose(arrays["test_rms_distance"][names == "test_noisy"], 4 / 255, atol=1e-6)
    np.testing.assert_allclose(arrays["test_rms_distance"][names == "test_far"], 64 / 255, atol=1e-6)
    np.testing.assert_allclose(arrays["test_linf_distance"][names == "test_far"], 64 / 255, atol=1e-6)
    overall = table[(table["images"] == "synthetic") & (table["space"] == "rms") & (table["class"] == "all")]
    by_set = overall.set_index("nearest_in")
    assert by_set.loc["test", "n_within"] == 12 and by_set.loc["train", "n_within"] == 5
    assert by_set.loc["test", "fraction_within"] == pytest.approx(12 / len(names))
    assert by_set.loc["test", "reference_n_within"] == 0  # random real images are far from each other
    reference = table[(table["images"] == "real_test") & (table["class"] == "all")]
    assert set(reference["space"]) == set(audit.SPACES) and (reference["n"] == 40).all()
    assert reference.set_index("space").loc["rms", "min"] > THRESHOLD
    per_class = table[(table["images"] == "synthetic") & (table["class"] != "all") & (table["space"] == "rms")]
    assert per_class.groupby("nearest_in")["n"].sum().to_dict() == {"test": len(names), "train": len(names)}
    assert outputs["out_png"].stat().st_size > 0
    assert read_attrs(outputs["out_path"])["stage"] == "audit"


def test_selection_leaves_the_test_duplicates_out_and_records_how_many(planted, tmp_path):
    names, _, outputs, inputs = planted
    keep = np.ones(len(names), bool)
    keep[0] = False  # a test copy that the filter discarded already: not counted as removed by the audit
    write_arrays(tmp_path / "filter.h5", provenance("filter"), keep=keep, labels=np.zeros(len(names), np.int64))
    chosen = select_images(images_path=inputs / "images.h5", filter_path=tmp_path / "filter.h5",
                           out_path=tmp_path / "selected.h5", method="random", k=None, seed=0,
                           audit_path=outputs["out_path"])
    source = read_arrays(tmp_path / "selected.h5", "source_index")["source_index"]
    assert chosen == len(names) - 12
    assert not np.isin(names[source], ["test_copy", "test_noisy"]).any()
    assert read_attrs(tmp_path / "selected.h5")["test_duplicates_removed"] == 11
    select_images(images_path=inputs / "images.h5", filter_path=tmp_path / "filter.h5",
                  out_path=tmp_path / "all.h5", method="random", k=None, seed=0)
    assert read_attrs(tmp_path / "all.h5")["test_duplicates_removed"] == 0


def test_training_records_the_removed_count_of_its_synthetic_set(tmp_path):
    from port.training import removed_test_duplicates

    write_images(tmp_path / "selected.h5", _random_images(3, 4), provenance("select", test_duplicates_removed=3))
    write_images(tmp_path / "foreign.h5", _random_images(3, 4), provenance("sample"))
    assert removed_test_duplicates(tmp_path / "selected.h5") == 3
    assert removed_test_duplicates(tmp_path / "foreign.h5") is None  # a set that does not say
    assert removed_test_duplicates(None) == 0  # the baseline trains on real images only


def test_selection_refuses_an_audit_of_another_set(planted):
    names, _, outputs, _ = planted
    with pytest.raises(ArtifactError, match="audit covers"):
        without_test_duplicates(np.ones(len(names) - 1, bool), outputs["out_path"])


def test_audit_refuses_images_of_another_geometry(planted, tmp_path):
    inputs = planted[3]
    write_images(tmp_path / "rgb.h5", _random_images(4, 5, (8, 8, 3)), provenance("sample", dataset="toy"))
    _lanet(tmp_path / "rgb_lanet.pt", (8, 8, 3))
    with pytest.raises(ArtifactError, match="cannot be compared"):
        audit.audit_synthetic(images_path=tmp_path / "rgb.h5", train_path=inputs / "train.h5",
                              test_path=inputs / "test.h5", lanet_path=tmp_path / "rgb_lanet.pt", generator="toy",
                              out_path=tmp_path / "a.h5", out_csv=tmp_path / "a.csv", out_png=tmp_path / "a.png",
                              test_threshold=THRESHOLD, train_threshold=THRESHOLD)
    assert not (tmp_path / "a.h5").exists()


def test_memory_stays_bounded_on_a_set_of_many_blocks(tmp_path, monkeypatch):
    """16 blocks of synthetic images are searched holding about one: the images numpy allocates
    at the peak are a small part of the set, whose results still equal the whole set's search."""
    shape, block, n_blocks = (16, 16, 3), 128, 16
    monkeypatch.setattr(audit, "QUERY_BLOCK", block)
    images = _random_images(block * n_blocks, 7, shape)
    with ImageWriter(tmp_path / "images.h5", shape, provenance("sample"), chunk_images=block) as writer:
        writer.append(images)
    _real_set(tmp_path / "test.h5", _random_images(30, 8, shape))
    _real_set(tmp_path / "train.h5", _random_images(50, 9, shape))
    _lanet(tmp_path / "lanet.pt", shape)
    model, _ = audit.load_model(tmp_path / "lanet.pt")
    real = {name: audit.RealSet(tmp_path / f"{name}.h5", model, "cpu") for name in audit.REAL_SETS}
    tracemalloc.start()
    try:
        arrays = audit.audit_arrays(tmp_path / "images.h5", real, model, "cpu")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < images.nbytes / 4, f"peak {peak} bytes for a set of {images.nbytes}"
    everything = audit.flat_pixels(images, "cpu")
    distance, index = audit.nearest(everything, real["test"].rows["rms"], "rms")
    np.testing.assert_array_equal(arrays["test_rms_index"], index.numpy())
    np.testing.assert_allclose(arrays["test_rms_distance"], distance.numpy(), atol=1e-6)


def test_negative_threshold_is_refused():
    from port.errors import SettingsError

    with pytest.raises(SettingsError, match="audit.train_threshold"):
        audit.check_thresholds(0.05, -0.1)
