"""Choosing and materialising the filtered synthetic images (port.selection)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from port.artifacts import ImageWriter, provenance, read_attrs, validate_image_set, write_arrays
from port.errors import ArtifactError, SettingsError
from port.selection import choose, select_images


def _keep(n=1000, seed=0, p=0.7):
    return np.random.default_rng(seed).random(n) < p


def test_random_choice_is_reproducible_from_its_seed():
    keep = _keep()
    a = choose(keep, "random", 100, seed=3)
    np.testing.assert_array_equal(a, choose(keep, "random", 100, seed=3))
    assert not np.array_equal(a, choose(keep, "random", 100, seed=4))


def test_choice_is_sorted_unique_and_only_from_kept_images():
    keep = _keep()
    chosen = choose(keep, "random", 300, seed=1)
    assert len(chosen) == 300 == len(np.unique(chosen))
    assert np.all(np.diff(chosen) > 0)
    assert keep[chosen].all()
    # spread over the whole set, not just its first kept images
    assert chosen.max() > np.flatnonzero(keep)[400]


def test_k_none_keeps_every_kept_image():
    keep = _keep()
    np.testing.assert_array_equal(choose(keep, "random", None, seed=0), np.flatnonzero(keep))


def test_k_equal_to_number_kept_takes_them_all():
    keep = _keep(50)
    np.testing.assert_array_equal(choose(keep, "random", int(keep.sum()), seed=0), np.flatnonzero(keep))


def test_k_larger_than_number_kept_raises():
    keep = _keep(50)
    with pytest.raises(ArtifactError, match=f"k={int(keep.sum()) + 1}.*only {int(keep.sum())}"):
        choose(keep, "random", int(keep.sum()) + 1, seed=0)


@pytest.mark.parametrize("k", [None, 1])
def test_empty_filter_raises(k):
    with pytest.raises(ArtifactError, match="kept no synthetic images"):
        choose(np.zeros(20, dtype=bool), "random", k, seed=0)


def test_unknown_method_raises():
    with pytest.raises(SettingsError, match="unknown selection method"):
        choose(_keep(20), "hardest", 3, seed=0)


# --- select_images ------------------------------------------------------------------------------

N = 2500  # more than one 1024-image block, so selection crosses block boundaries


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("select")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 4, 4, 1), dtype=np.uint8)
    with ImageWriter(root / "images.h5", (4, 4, 1), provenance("sample", {}, 0), chunk_images=256) as writer:
        writer.append(images)
    keep = rng.random(N) < 0.6
    labels = rng.integers(0, 10, N).astype(np.int64)
    write_arrays(root / "filter.h5", provenance("filter", {"threshold": 0.9}), keep=keep, labels=labels)
    return root, images, keep, labels


@pytest.mark.parametrize("k", [None, 700])
def test_select_images_copies_chosen_images_with_labels_and_source_index(synthetic, tmp_path, k):
    root, images, keep, labels = synthetic
    out = tmp_path / "selected.h5"
    n = select_images(images_path=root / "images.h5", filter_path=root / "filter.h5", out_path=out, method="random",
                      k=k, seed=5)
    expected = choose(keep, "random", k, seed=5)
    assert n == len(expected) == (keep.sum() if k is None else k)
    assert validate_image_set(out, num_classes=10, image_shape=(4, 4, 1)) == n
    with h5py.File(out, "r") as handle:
        np.testing.assert_array_equal(handle["source_index"][()], expected)
        np.testing.assert_array_equal(handle["images"][()], images[expected])
        np.testing.assert_array_equal(handle["labels"][()], labels[expected])
        assert handle["images"].chunks[1:] == (4, 4, 1)
    attrs = read_attrs(out)
    assert attrs["stage"] == "select" and int(attrs["seed"]) == 5
    assert not list(tmp_path.glob(".*.tmp"))


def test_select_images_refuses_a_filter_of_another_length(synthetic, tmp_path):
    root, _, keep, labels = synthetic
    for n in (N - 100, N + 100):
        short = tmp_path / f"filter{n}.h5"
        write_arrays(short, {}, keep=np.resize(keep, n), labels=np.resize(labels, n))
        with pytest.raises(ArtifactError, match=f"filter{n}.h5"):
            select_images(images_path=root / "images.h5", filter_path=short, out_path=tmp_path / "out.h5",
                          method="random", k=None, seed=0)
    assert not (tmp_path / "out.h5").exists()


# --- adaptive selection and score groups ------------------------------------------------------------

def _scores(n=1000, seed=5):
    return np.random.default_rng(seed).random(n).astype(np.float32)


def test_adaptive_picks_exactly_the_k_lowest_scores_among_kept_images():
    keep, scores = _keep(), _scores()
    chosen = choose(keep, "adaptive", 50, seed=0, scores=scores)
    kept = np.flatnonzero(keep)
    expected = np.sort(kept[np.argsort(scores[kept])[:50]])
    np.testing.assert_array_equal(chosen, expected)
    assert scores[chosen].max() <= np.sort(scores[kept])[49]
    # a discarded image with the lowest score of all is never chosen
    scores[np.flatnonzero(~keep)[0]] = -1.0
    assert np.flatnonzero(~keep)[0] not in choose(keep, "adaptive", 50, seed=0, scores=scores)


def test_adaptive_ignores_the_seed_and_breaks_ties_by_index():
    keep = np.ones(10, dtype=bool)
    scores = np.array([0.5, 0.1, 0.1, 0.9, 0.1, 0.2, 0.3, 0.1, 0.4, 0.6], dtype=np.float32)
    np.testing.assert_array_equal(choose(keep, "adaptive", 3, seed=0, scores=scores), [1, 2, 4])
    np.testing.assert_array_equal(choose(keep, "adaptive", 3, seed=9, scores=scores), [1, 2, 4])


def test_adaptive_needs_finite_aligned_scores():
    keep = _keep(20)
    with pytest.raises(ArtifactError, match="one score per synthetic image"):
        choose(keep, "adaptive", 3, seed=0)
    with pytest.raises(ArtifactError, match="one score per synthetic image"):
        choose(keep, "adaptive", 3, seed=0, scores=_scores(19))
    bad = _scores(20)
    bad[np.flatnonzero(keep)[0]] = np.nan
    with pytest.raises(ArtifactError, match="NaN"):
        choose(keep, "adaptive", 3, seed=0, scores=bad)


def test_score_groups_partition_the_kept_images_in_score_order():
    keep, scores = _keep(), _scores()
    groups = [choose(keep, f"group{g}", None, seed=0, scores=scores, n_groups=3) for g in range(3)]
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), np.flatnonzero(keep))
    sizes = [len(g) for g in groups]
    assert max(sizes) - min(sizes) <= 1
    assert scores[groups[0]].max() <= scores[groups[1]].min() and scores[groups[1]].max() <= scores[groups[2]].min()
    with pytest.raises(SettingsError, match="below n_groups"):
        choose(keep, "group3", None, seed=0, scores=scores, n_groups=3)


def test_select_images_adaptive_writes_scores_and_training_attrs(tmp_path):
    n = 40
    images = np.random.default_rng(0).integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)
    with ImageWriter(tmp_path / "images.h5", (4, 4, 1), provenance("sample", {}, 0, dataset="toy")) as writer:
        writer.append(images)
    keep = np.arange(n) % 4 != 0
    labels = np.arange(n) % 3
    write_arrays(tmp_path / "filter.h5", provenance("filter", {}), keep=keep, labels=labels)
    scores = _scores(n)
    write_arrays(tmp_path / "scores.h5", provenance("score", {}), score=scores, clean_score=scores)
    with ImageWriter(tmp_path / "real.h5", (4, 4, 1), provenance("data", {}, 0, num_classes=3, channel_mean=[0.5],
                                                                  channel_std=[0.2])) as writer:
        writer.append(images[:5], labels=labels[:5])
    out = tmp_path / "adaptive.h5"
    assert select_images(images_path=tmp_path / "images.h5", filter_path=tmp_path / "filter.h5", out_path=out,
                         method="adaptive", k=10, seed=0,
                         scores_path=tmp_path / "scores.h5", real_path=tmp_path / "real.h5") == 10
    with h5py.File(out) as handle:
        index = handle["source_index"][()]
        np.testing.assert_array_equal(handle["images"][()], images[index])
        np.testing.assert_array_equal(handle["score"][()], scores[index])
        np.testing.assert_array_equal(handle["labels"][()], labels[index])
        assert handle.attrs["num_classes"] == 3 and list(handle.attrs["channel_std"]) == [0.2]
    assert keep[index].all() and scores[index].max() <= np.sort(scores[keep])[9]
