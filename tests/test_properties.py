"""Property-based tests (hypothesis): HDF5 readers and checksums, the filter rule, selection,
and the config validator."""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from port.artifacts import (CHECKSUM_KEY, INPUTS_KEY, ImageWriter, iter_image_blocks, provenance, read_arrays,
                            read_attrs, read_image_set, verified_inputs, verify_hdf5, write_arrays)
from port.errors import ArtifactError, ConfigError
from port.settings.checks import check_config
from port.labeling import keep_mask
from port.selection import choose
from port.settings.schema import SCHEMA as SCHEMA_FILE

SMALL = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(SCHEMA_FILE)


# --------------------------------------------------------------------------- HDF5


@st.composite
def image_sets(draw):
    n = draw(st.integers(0, 40))
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.sampled_from([1, 3])))
    seed = draw(st.integers(0, 2**32 - 1))
    gen = np.random.default_rng(seed)
    images = gen.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = gen.integers(0, 10, n).astype(np.int64)
    probs = gen.random((n, 3)).astype(draw(st.sampled_from([np.float32, np.float64])))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=5)))  # batch boundaries of the appends
    return images, labels, probs, [0, *cuts, n], draw(st.integers(1, 16))


@SMALL
@given(image_sets(), st.integers(1, 50))
def test_image_writer_round_trip_blocks_and_checksum(data, block):
    images, labels, probs, cuts, chunk = data
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set.h5"
        with ImageWriter(path, images.shape[1:], {"num_classes": 10}, chunk_images=chunk) as writer:
            for start, stop in zip(cuts, cuts[1:]):
                writer.append(images[start:stop], labels=labels[start:stop], probs=probs[start:stop])
        got_images, got_labels = read_image_set(path, num_classes=10) if len(images) else (images, labels)
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)
        if len(images):
            np.testing.assert_array_equal(read_arrays(path, "probs")["probs"], probs)
        # blocks cover every row exactly once, in order
        blocks = list(iter_image_blocks(path, block))
        assert [offset for offset, _ in blocks] == list(range(0, len(images), block))
        joined = np.concatenate([b for _, b in blocks]) if blocks else images[:0]
        np.testing.assert_array_equal(joined, images)
        # the digest streamed while writing is what a reader recomputes from the file
        with h5py.File(path, "r") as handle:
            recorded = handle.attrs[CHECKSUM_KEY]
        assert verify_hdf5(path) == recorded


@SMALL
@given(image_sets(), st.data())
def test_any_changed_byte_is_caught(data, draw):
    images, labels, probs, _, chunk = data
    assume(len(images) > 0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set.h5"
        with ImageWriter(path, images.shape[1:], {}, chunk_images=chunk) as writer:
            writer.append(images, labels=labels)
        name = draw.draw(st.sampled_from(["images", "labels"]))
        row = draw.draw(st.integers(0, len(images) - 1))
        with h5py.File(path, "r+") as handle:
            if name == "images":
                handle["images"][row, 0, 0, 0] ^= np.uint8(draw.draw(st.integers(1, 255)))
            else:
                handle["labels"][row] += draw.draw(st.integers(1, 5))
        with pytest.raises(ArtifactError, match="set.h5: content checksum mismatch"):
            verify_hdf5(path)


@SMALL
@given(st.integers(0, 60), st.integers(0, 2**32 - 1), st.sampled_from([np.int64, np.float32, np.bool_, np.uint8]))
def test_write_arrays_round_trip_and_checksum(n, seed, dtype):
    values = (np.random.default_rng(seed).random((n, 2)) * 100).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "arrays.h5"
        write_arrays(path, {"stage": "x"}, values=values, index=np.arange(n))
        got = read_arrays(path, "values", "index")
        np.testing.assert_array_equal(got["values"], values)
        assert got["values"].dtype == values.dtype
        np.testing.assert_array_equal(got["index"], np.arange(n))
        with h5py.File(path, "r") as handle:
            assert verify_hdf5(path) == handle.attrs[CHECKSUM_KEY]


# --------------------------------------------------------------------------- the filter rule


@st.composite
def labeler_outputs(draw):
    n = draw(st.integers(1, 60))
    gen = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    classes = draw(st.integers(2, 10))
    return (gen.integers(0, classes, n), gen.random(n), gen.integers(0, classes, n), gen.random(n))


thresholds = st.floats(0.0, 1.0, allow_nan=False)


@SMALL
@given(labeler_outputs(), thresholds, thresholds)
def test_keep_mask_is_monotone_in_the_threshold(outputs, t1, t2):
    low, high = sorted((t1, t2))
    kept_low, kept_high = keep_mask(*outputs, low), keep_mask(*outputs, high)
    assert not (kept_high & ~kept_low).any()  # a stricter threshold never keeps more


@SMALL
@given(labeler_outputs(), thresholds)
def test_keep_mask_keeps_agreement_and_confidence(outputs, threshold):
    pred_a, conf_a, pred_b, conf_b = outputs
    keep = keep_mask(pred_a, conf_a, pred_b, conf_b, threshold)
    assert keep[pred_a == pred_b].all()  # agreeing labelers are always kept
    assert keep[(conf_a >= threshold) | (conf_b >= threshold)].all()  # one sure labeler suffices
    assert not keep[(pred_a != pred_b) & (conf_a < threshold) & (conf_b < threshold)].any()
    assert keep_mask(pred_a, conf_a, pred_b, conf_b, 0.0).all()
    agree = keep_mask(pred_a, conf_a, pred_a, conf_b, threshold)
    assert agree.all()


# --------------------------------------------------------------------------- selection


@st.composite
def filter_masks(draw, min_kept=1):
    n = draw(st.integers(min_kept, 200))
    gen = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    keep = gen.random(n) < draw(st.floats(0.2, 1.0))
    keep[gen.choice(n, min_kept, replace=False)] = True
    return keep


@SMALL
@given(filter_masks(), st.data(), st.integers(0, 2**32 - 1))
def test_random_choice_is_exactly_k_sorted_distinct_candidates(keep, data, seed):
    candidates = np.flatnonzero(keep)
    k = data.draw(st.integers(1, len(candidates)))
    chosen = choose(keep, "random", k, seed)
    assert len(chosen) == k and len(np.unique(chosen)) == k
    assert np.all(np.diff(chosen) > 0)  # sorted
    assert keep[chosen].all() and np.isin(chosen, candidates).all()
    np.testing.assert_array_equal(chosen, choose(keep, "random", k, seed))  # reproducible
    np.testing.assert_array_equal(choose(keep, "random", None, seed), candidates)  # k = null: all


@SMALL
@given(filter_masks(min_kept=40), st.data(), st.integers(0, 2**31), st.integers(1, 2**31))
def test_random_choice_depends_on_the_seed(keep, data, seed, delta):
    n = int(keep.sum())
    k = data.draw(st.integers(10, n - 10)) if n >= 20 else n // 2  # C(n, k) >= C(40, 10) ~ 8.5e8
    assume(10 <= k <= n - 10)
    assert not np.array_equal(choose(keep, "random", k, seed), choose(keep, "random", k, seed + delta))


@SMALL
@given(filter_masks(), st.integers(1, 50), st.integers(0, 100))
def test_random_choice_refuses_k_beyond_the_candidates(keep, extra, seed):
    with pytest.raises(ArtifactError, match="selection.k"):
        choose(keep, "random", int(keep.sum()) + extra, seed)


# --------------------------------------------------------------------------- config validator


@pytest.fixture(scope="module")
def shipped():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


D = "datasets.digits."
# key, type, lower bound (and whether it is exclusive), upper bound (and whether exclusive), nullable
FIELDS = [
    ("seed", "integer", 0, False, None, False, False),
    (D + "training.epochs", "integer", 1, False, None, False, False),
    (D + "training.batch_size", "integer", 1, False, None, False, False),
    (D + "training.gamma", "number", 0, False, 1, False, False),
    (D + "training.lr", "number", 0, True, None, False, False),
    (D + "training.val_fraction", "number", 0, True, 1, True, False),
    (D + "threats.linf.eps", "number", 0, False, None, False, False),
    (D + "threats.l2.steps", "integer", 1, False, None, False, False),
    (D + "filter.threshold", "number", 0, False, 1, False, False),
    (D + "generators.ddpm.steps", "integer", 1, False, None, False, False),
    (D + "selection.k", "integer", 1, False, None, False, True),
    (D + "labelers.lanet.epochs", "integer", 1, False, None, False, False),
    (D + "evaluation.pgd_steps", "integer", 1, False, None, False, False),
    (D + "smoothing.sigma", "number", 0, True, None, False, False),
    (D + "smoothing.certify.alpha", "number", 0, True, 1, True, False),
]


def _perturbed(config, dotted, value):
    """A copy of `config` with one value (`a.b.c`) replaced."""
    config = copy.deepcopy(config)
    node = config
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return config


def valid_values(field):
    _, kind, lo, lo_ex, hi, hi_ex, nullable = field
    if kind == "integer":
        values = st.integers(lo + int(lo_ex), (hi - int(hi_ex)) if hi is not None else lo + 10**6)
    else:
        values = st.floats(lo, hi if hi is not None else 1e6, exclude_min=lo_ex, exclude_max=hi_ex, allow_nan=False)
    return st.one_of(values, st.none()) if nullable else values


def invalid_values(field):
    _, kind, lo, lo_ex, hi, hi_ex, nullable = field
    wrong_type = [st.text(max_size=6), st.lists(st.integers(), max_size=2), st.booleans(),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=1)]
    if not nullable:
        wrong_type.append(st.none())
    if kind == "integer":
        wrong_type.append(st.floats(-100, 100, allow_nan=False).filter(lambda v: v != int(v)))
    below = st.floats(lo - 1e6, lo, exclude_max=not lo_ex, allow_nan=False)
    if kind == "integer":
        below = st.integers(lo - 10**6, lo - 1)
    out_of_range = [below]
    if hi is not None:
        out_of_range.append(st.floats(hi, hi + 1e6, exclude_min=not hi_ex, allow_nan=False))
    return st.one_of(*wrong_type, *out_of_range)


@st.composite
def perturbations(draw, valid: bool):
    field = draw(st.sampled_from(FIELDS))
    return field[0], draw(valid_values(field) if valid else invalid_values(field))


@SMALL
@given(perturbations(valid=False))
def test_schema_rejects_wrong_types_and_ranges_naming_the_key(shipped, change):
    key, value = change
    with pytest.raises(WorkflowError) as info:
        validate(_perturbed(shipped, key, value), SCHEMA)
    assert f"['{key.split('.')[-1]}']" in str(info.value), (key, value, str(info.value)[-400:])


@SMALL
@given(perturbations(valid=True))
@example((D + "selection.k", None))
def test_schema_accepts_valid_values(shipped, change):
    good = _perturbed(shipped, *change)
    validate(good, SCHEMA)
    if change == (D + "selection.k", None):
        # k may be null in the schema (keep every filtered image), but the shipped digits config has a mixture
        # study, which splits k among its members: the cross-field check refuses it, naming the key
        with pytest.raises(ConfigError, match=r"datasets\.digits\.selection\.k"):
            check_config(good)
    else:
        check_config(good)  # and the cross-field checks accept it too


# --------------------------------------------------------------------------- damaged artifacts


def _finished_image_set(path: Path) -> None:
    """A train.h5 as prepare_data writes it: images, labels and the attributes models are built from."""
    gen = np.random.default_rng(0)
    with ImageWriter(path, (4, 4, 1), provenance("prepare_data", {"kind": "npz"}, 0, dataset="mine", num_classes=3,
                                                 channel_mean=[0.5], channel_std=[0.25]), chunk_images=8) as writer:
        writer.append(gen.integers(0, 256, (20, 4, 4, 1), dtype=np.uint8), labels=gen.integers(0, 3, 20))


def _pipeline_read(path: Path):
    """What a downstream job reads: logged_job verifies the input, then the stage reads images,
    labels and attributes."""
    with verified_inputs([path]):
        images, labels = read_image_set(path, 3)
        attrs = {k: v for k, v in read_attrs(path).items() if k != INPUTS_KEY}
    return images, labels, json_attrs(attrs)


def json_attrs(attrs: dict) -> str:
    return json.dumps({k: np.asarray(v).tolist() for k, v in attrs.items()}, sort_keys=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=3))
def test_flipped_bytes_give_the_original_content_or_an_error_naming_the_file(flips):
    """Any bytes of a finished artifact flipped behind the pipeline's back (mtime kept, so Snakemake
    sees no change): every read returns exactly what was written, or raises ArtifactError naming
    the file; never changed content, never a raw OSError/RuntimeError/KeyError from h5py."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.h5"
        _finished_image_set(path)
        original = _pipeline_read(path)
        stat = path.stat()
        data = bytearray(path.read_bytes())
        for where, mask in flips:
            data[int(where * len(data))] ^= mask
        path.write_bytes(bytes(data))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        try:
            images, labels, attrs = _pipeline_read(path)
        except ArtifactError as err:
            assert str(path) in str(err)
        else:
            np.testing.assert_array_equal(images, original[0])
            np.testing.assert_array_equal(labels, original[1])
            assert attrs == original[2]
