"""The PORT filter: discard when the labelers disagree and both are unsure (port.labeling)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from port.artifacts import provenance, read_arrays, read_attrs, write_arrays
from port.errors import ArtifactError, SettingsError
from port.labeling import filter_images, keep_mask


@pytest.mark.parametrize("pred_a,conf_a,pred_b,conf_b,keep", [
    (0, 0.50, 1, 0.60, False),   # classes differ, both unsure: discard
    (3, 0.89, 4, 0.899, False),  # just below the threshold
    (2, 0.30, 2, 0.40, True),    # same class, both unsure: keep
    (0, 0.95, 1, 0.50, True),    # differ, but lanet is sure
    (0, 0.50, 1, 0.95, True),    # differ, but splitnet is sure
    (0, 0.99, 1, 0.99, True),    # differ, both sure
    (0, 0.90, 1, 0.50, True),    # exactly the threshold is not "below"
    (0, 0.50, 1, 0.90, True),
    (5, 0.90, 6, 0.90, True),
])
def test_keep_mask_rule(pred_a, conf_a, pred_b, conf_b, keep):
    got = keep_mask([pred_a], [conf_a], [pred_b], [conf_b], threshold=0.9)
    assert got.dtype == bool and got.tolist() == [keep]


def test_keep_mask_vectorised_matches_rule():
    rng = np.random.default_rng(0)
    n = 500
    pa, pb = rng.integers(0, 3, n), rng.integers(0, 3, n)
    ca, cb = rng.random(n), rng.random(n)
    got = keep_mask(pa, ca, pb, cb, 0.7)
    expected = [not (a != b and x < 0.7 and y < 0.7) for a, b, x, y in zip(pa, pb, ca, cb)]
    assert got.tolist() == expected
    assert 0 < got.sum() < n


@pytest.mark.parametrize("which", ["a", "b"])
def test_keep_mask_nan_confidence_raises(which):
    conf_ok, conf_nan = np.array([0.5, 0.95]), np.array([0.5, np.nan])
    conf_a, conf_b = (conf_nan, conf_ok) if which == "a" else (conf_ok, conf_nan)
    with pytest.raises(ArtifactError, match="NaN"):
        keep_mask([0, 1], conf_a, [1, 1], conf_b, 0.9)


def _probs(classes, confidence, num_classes=3):
    """Rows with `confidence` on `classes` and the rest spread evenly."""
    rows = np.full((len(classes), num_classes), 0.0)
    for i, (c, p) in enumerate(zip(classes, confidence)):
        rows[i] = (1 - p) / (num_classes - 1)
        rows[i, c] = p
    return rows.astype(np.float32)


def _labels_file(path, lanet, splitnet):
    write_arrays(path, provenance("pseudo_label", {"num_classes": lanet.shape[1]}),
                 labels=lanet.argmax(1).astype(np.int64), lanet_probs=lanet, splitnet_probs=splitnet)
    return path


def test_filter_images_end_to_end(tmp_path):
    # image:       0     1     2     3     4     5     6     7
    lanet = _probs([0, 0, 1, 1, 2, 2, 2, 0], [.50, .95, .60, .60, .40, .80, .90, .70])
    split = _probs([1, 2, 1, 0, 0, 2, 1, 2], [.50, .40, .50, .80, .45, .60, .60, .85])
    expected_keep = [False, True, True, False, False, True, True, False]
    path = _labels_file(tmp_path / "labels.h5", lanet, split)

    kept = filter_images(labels_path=path, out_mask=tmp_path / "filter.h5", out_counts=tmp_path / "counts.csv",
                         threshold=0.9)
    assert kept == 4
    mask = read_arrays(tmp_path / "filter.h5", "keep", "labels")
    assert mask["keep"].tolist() == expected_keep
    assert mask["labels"].tolist() == [0, 0, 1, 1, 2, 2, 2, 0]
    attrs = read_attrs(tmp_path / "filter.h5")
    assert attrs["stage"] == "filter" and '"threshold": 0.9' in attrs["params"]

    counts = pd.read_csv(tmp_path / "counts.csv")
    assert list(counts.columns) == ["class", "n_total", "n_kept", "n_discarded", "kept_fraction",
                                    "generator_agreement"]
    assert counts["generator_agreement"].isna().all()  # no generator labels
    assert counts["class"].tolist() == [0, 1, 2]
    assert counts["n_total"].tolist() == [3, 2, 3]
    assert counts["n_kept"].tolist() == [1, 1, 2]
    assert counts["n_discarded"].tolist() == [2, 1, 1]
    np.testing.assert_allclose(counts["kept_fraction"], [1 / 3, 1 / 2, 2 / 3])
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_filter_counts_include_empty_classes(tmp_path):
    lanet = _probs([0, 0, 2], [.5, .5, .5], num_classes=4)
    split = _probs([0, 1, 2], [.5, .5, .5], num_classes=4)
    path = _labels_file(tmp_path / "labels.h5", lanet, split)
    assert filter_images(labels_path=path, out_mask=tmp_path / "f.h5", out_counts=tmp_path / "c.csv",
                         threshold=0.9) == 2
    counts = pd.read_csv(tmp_path / "c.csv")
    assert counts["n_total"].tolist() == [2, 0, 1, 0]
    assert counts["n_kept"].tolist() == [1, 0, 1, 0]
    assert counts["kept_fraction"].tolist() == [0.5, 0.0, 1.0, 0.0]


def test_filter_threshold_zero_keeps_all_and_one_discards_all_disagreements(tmp_path):
    lanet = _probs([0, 1, 2], [.99, .5, .5])
    split = _probs([1, 1, 0], [.99, .5, .5])
    path = _labels_file(tmp_path / "labels.h5", lanet, split)
    assert filter_images(labels_path=path, out_mask=tmp_path / "f0.h5", out_counts=tmp_path / "c0.csv",
                         threshold=0.0) == 3
    assert filter_images(labels_path=path, out_mask=tmp_path / "f1.h5", out_counts=tmp_path / "c1.csv",
                         threshold=1.0) == 1
    assert read_arrays(tmp_path / "f1.h5", "keep")["keep"].tolist() == [False, True, False]


@pytest.mark.parametrize("slot", ["lanet", "splitnet"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_filter_non_finite_probabilities_raise(tmp_path, slot, bad):
    lanet = _probs([0, 1, 2], [.6, .6, .6])
    split = _probs([0, 1, 2], [.6, .6, .6])
    (lanet if slot == "lanet" else split)[1, 0] = bad
    path = _labels_file(tmp_path / "labels.h5", lanet, split)
    with pytest.raises(ArtifactError, match="labels.h5.*NaN"):
        filter_images(labels_path=path, out_mask=tmp_path / "f.h5", out_counts=tmp_path / "c.csv", threshold=0.9)
    assert not (tmp_path / "f.h5").exists() and not (tmp_path / "c.csv").exists()


def test_filter_rejects_threshold_outside_unit_interval(tmp_path):
    path = _labels_file(tmp_path / "labels.h5", _probs([0], [.5]), _probs([0], [.5]))
    for threshold in (-0.1, 1.5):
        with pytest.raises(SettingsError, match="threshold"):
            filter_images(labels_path=path, out_mask=tmp_path / "f.h5", out_counts=tmp_path / "c.csv",
                          threshold=threshold)


def test_filter_missing_probabilities_raise(tmp_path):
    path = tmp_path / "labels.h5"
    write_arrays(path, {}, labels=np.zeros(3, dtype=np.int64), lanet_probs=_probs([0, 0, 0], [.5] * 3))
    with pytest.raises(ArtifactError, match="splitnet_probs"):
        filter_images(labels_path=path, out_mask=tmp_path / "f.h5", out_counts=tmp_path / "c.csv", threshold=0.9)


def test_pseudo_labels_in_shards_merge_to_the_unsharded_result(tmp_path):
    from port.artifacts import write_images
    from port.labeling import pseudo_label
    from port.models import build_model, model_spec, save_model
    from port.shards import merge_array_shards

    for name, arch in (("lanet", "small_cnn"), ("splitnet", "mlp")):
        spec = model_spec(arch, 1, 10, 8, [0.5], [0.5])
        save_model(build_model(**spec), spec, tmp_path / f"{name}.pt")
    images = np.random.default_rng(0).integers(0, 256, (25, 8, 8, 1), dtype=np.uint8)
    write_images(tmp_path / "images.h5", images, provenance("sample", {}, 0, dataset="toy"))
    inputs = dict(images_path=tmp_path / "images.h5", lanet_path=tmp_path / "lanet.pt",
                  splitnet_path=tmp_path / "splitnet.pt")
    pseudo_label(**inputs, out_path=tmp_path / "whole.h5", progress=False)
    shards = [tmp_path / f"shard_{i}.h5" for i in range(3)]
    for i, path in enumerate(shards):
        pseudo_label(**inputs, out_path=path, shard=i, n_shards=3, progress=False)
    merge_array_shards(shard_paths=shards, out_path=tmp_path / "merged.h5", n_images=25)
    whole = read_arrays(tmp_path / "whole.h5", "labels", "lanet_probs", "splitnet_probs")
    merged = read_arrays(tmp_path / "merged.h5", "labels", "lanet_probs", "splitnet_probs")
    for key in whole:
        np.testing.assert_allclose(merged[key], whole[key], rtol=1e-5, atol=1e-6)
    assert read_attrs(tmp_path / "merged.h5")["dataset"] == "toy"


def labelled_toy_set(tmp_path, n_images=25, source_labels=True):
    from port.artifacts import write_images
    from port.models import build_model, model_spec, save_model

    for name, arch in (("lanet", "small_cnn"), ("splitnet", "mlp")):
        spec = model_spec(arch, 1, 10, 8, [0.5], [0.5])
        save_model(build_model(**spec), spec, tmp_path / f"{name}.pt")
    images = np.random.default_rng(0).integers(0, 256, (n_images, 8, 8, 1), dtype=np.uint8)
    arrays = {"source_labels": (np.arange(n_images) * 7) % 10} if source_labels else {}
    write_images(tmp_path / "images.h5", images, provenance("sample", {}, 0, dataset="toy"), **arrays)
    return dict(images_path=tmp_path / "images.h5", lanet_path=tmp_path / "lanet.pt",
                splitnet_path=tmp_path / "splitnet.pt")


def test_labels_from_generator_keeps_both_labelers_and_reports_agreement(tmp_path):
    from port.labeling import pseudo_label

    inputs = labelled_toy_set(tmp_path)
    pseudo_label(**inputs, out_path=tmp_path / "gen.h5", labels_from="generator", progress=False)
    pseudo_label(**inputs, out_path=tmp_path / "lanet.h5", progress=False)
    gen = read_arrays(tmp_path / "gen.h5", "labels", "source_labels", "lanet_probs", "splitnet_probs")
    lanet = read_arrays(tmp_path / "lanet.h5", "labels", "source_labels", "lanet_probs")
    source = (np.arange(25) * 7) % 10
    np.testing.assert_array_equal(gen["labels"], source)
    np.testing.assert_array_equal(lanet["source_labels"], source)  # recorded either way
    np.testing.assert_array_equal(lanet["labels"], lanet["lanet_probs"].argmax(1))
    np.testing.assert_allclose(gen["lanet_probs"], lanet["lanet_probs"])

    filter_images(labels_path=tmp_path / "gen.h5", out_mask=tmp_path / "f.h5", out_counts=tmp_path / "c.csv",
                  threshold=0.9)
    counts = pd.read_csv(tmp_path / "c.csv")
    agree = gen["lanet_probs"].argmax(1) == source
    expected = [agree[source == c].mean() for c in range(10)]
    np.testing.assert_allclose(counts["generator_agreement"], expected)
    np.testing.assert_array_equal(counts["n_total"], np.bincount(source, minlength=10))


def test_labels_from_generator_needs_generator_labels(tmp_path):
    from port.labeling import pseudo_label

    inputs = labelled_toy_set(tmp_path, source_labels=False)
    with pytest.raises(ArtifactError,
                       match=r"images\.h5: labels_from generator, but the image set has no 'source_labels'"):
        pseudo_label(**inputs, out_path=tmp_path / "out.h5", labels_from="generator", progress=False)
