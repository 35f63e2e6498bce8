"""Robust discrimination: ARC, per-image synthetic scores, shard merging (port.discrimination)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from port.artifacts import ArtifactError, provenance, read_arrays, write_arrays, write_images
from port.discrimination import (arc, arc_curve, arc_table, discrimination_sets, evaluate_discriminator,
                                 synthetic_heldout_split, synthetic_scores)
from port.shards import merge_array_shards, shard_bounds
from port.training import train


def test_arc_matches_the_trapezoid_by_hand():
    # 0.1 * (0.5 + 0.3) / 2 + 0.2 * (0.3 + 0.0) / 2 = 0.04 + 0.03
    assert arc([0.0, 0.1, 0.3], [1.0, 0.8, 0.5]) == pytest.approx(0.07)
    assert arc([0.3, 0.0, 0.1], [0.5, 1.0, 0.8]) == pytest.approx(0.07)  # order of the grid does not matter
    assert arc([0.0, 0.2], [0.5, 0.5]) == 0.0
    assert arc([0.0, 0.1, 0.2], [0.7, 0.2, 0.1]) == pytest.approx(0.1 * 0.2 / 2)  # below chance counts as chance
    with pytest.raises(ArtifactError, match="two eps"):
        arc([0.0], [0.9])


def test_synthetic_heldout_split_is_disjoint_seeded_and_bounded():
    pool, held = synthetic_heldout_split(100, 20, 50, seed=1)
    assert held.sum() == 20 and pool.sum() == 50 and not (pool & held).any()
    np.testing.assert_array_equal(held, synthetic_heldout_split(100, 20, None, seed=1)[1])
    with pytest.raises(ArtifactError, match="hold out 100 of 100"):
        synthetic_heldout_split(100, 100, None, seed=1)


def _softmax_model(weight):
    """Two logits from a linear map of the mean pixel: P(synthetic) rises with brightness."""
    class Model(torch.nn.Module):
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([torch.zeros_like(m), weight * (m - 0.5)], 1)
    return Model()


def test_scores_lie_in_unit_interval_and_never_exceed_the_unperturbed_output():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 8, 8)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    score, clean = synthetic_scores(model, x, eps=0.05, steps=5, step_size=0.02)
    assert ((score >= 0) & (score <= 1)).all() and (score <= clean).all()
    assert (score < clean).float().mean() > 0.9  # PGD does lower the probability
    score0, clean0 = synthetic_scores(model, x, eps=0.0, steps=5, step_size=0.0)
    torch.testing.assert_close(score0, clean0)


def test_scores_reach_the_exact_minimum_of_a_monotone_model():
    """For P(synthetic) increasing in every pixel, the minimum over the linf ball is x - eps (clipped)."""
    x = torch.full((3, 1, 4, 4), 0.5)
    model = _softmax_model(20.0)
    score, clean = synthetic_scores(model, x, eps=0.1, steps=3, step_size=0.05)
    expected = torch.softmax(model(x - 0.1), 1)[:, 1]
    torch.testing.assert_close(score, expected)
    assert (score < clean).all()


def _digit_sets(tmp_path, synthetic_kind):
    digits = load_digits()
    images = np.clip(np.rint(digits.images * 255 / 16), 0, 255).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    attrs = provenance("data", {}, 0, num_classes=10, channel_mean=[0.3], channel_std=[0.4], dataset="digits")
    write_images(tmp_path / "train.h5", images[:400], attrs, labels=labels[:400])
    write_images(tmp_path / "test.h5", images[400:560], attrs, labels=labels[400:560])
    if synthetic_kind == "same":  # other real digits: the same distribution
        synthetic = images[600:1100]
    else:  # bright noise: trivially separable
        synthetic = np.random.default_rng(0).integers(150, 256, (500, 8, 8, 1), dtype=np.uint8)
    write_images(tmp_path / "synthetic.h5", synthetic, provenance("sample", {}, 0, dataset="digits"))


def _arc_of(tmp_path, synthetic_kind):
    _digit_sets(tmp_path, synthetic_kind)
    sets = [tmp_path / f"{name}.h5" for name in ("d_real", "d_syn", "d_held")]
    discrimination_sets(train_path=tmp_path / "train.h5", test_path=tmp_path / "test.h5",
                        synthetic_path=tmp_path / "synthetic.h5", out_real=sets[0], out_synthetic=sets[1],
                        out_heldout=sets[2], settings={"n_heldout": 150, "n_train_synthetic": None}, seed=0)
    metrics = []
    for i, eps in enumerate([0.0, 0.05, 0.1]):
        threat = {"norm": "linf", "eps": eps, "step_size": eps / 2, "steps": 3} if eps else None
        settings = dict(arch="mlp", epochs=4, batch_size=32, lr=0.05, gamma=0.5, threat=threat,
                        model_selection="last", val_fraction=0.1, val_attack_steps=1)
        model = tmp_path / f"disc{i}.pt"
        train(train_path=sets[0], model_out=model, history_out=tmp_path / f"h{i}.csv",
              checkpoint_path=tmp_path / f"c{i}.pt", settings=settings, seed=i, synthetic_path=sets[1],
              progress=False)
        metrics.append(tmp_path / f"m{i}.csv")
        evaluate_discriminator(model_path=model, heldout_path=sets[2], out_csv=metrics[-1], eps=eps,
                               settings={"eval_steps": 5, "step_factor": 2.5}, seed=0,
                               row={"generator": synthetic_kind})
    curve = arc_curve(metric_csvs=metrics, out_csv=tmp_path / f"{synthetic_kind}.csv")
    assert list(curve["eps"]) == [0.0, 0.05, 0.1] and (curve["n_eval"] == 300).all()
    return curve, arc(curve["eps"], curve["robust_acc"])


def test_arc_of_a_set_against_itself_is_near_zero_and_of_separated_sets_is_large(tmp_path):
    (tmp_path / "same").mkdir()
    (tmp_path / "far").mkdir()
    same_curve, same = _arc_of(tmp_path / "same", "same")
    far_curve, far = _arc_of(tmp_path / "far", "far")
    assert abs(same) < 0.01, same_curve  # at most 0.1 (eps range) * 0.1 above chance on average
    assert far > 0.04, far_curve  # close to the maximum 0.1 * 0.5
    assert (far_curve["robust_acc"] > 0.9).all()
    table = arc_table(curve_csvs=[tmp_path / "same/same.csv", tmp_path / "far/far.csv"], out_table=tmp_path / "arc.csv",
                      out_plot=tmp_path / "arc.png")
    assert list(table["generator"]) == ["same", "far"]  # lowest ARC first
    assert table.set_index("generator").loc["far", "arc"] == pytest.approx(far)
    assert (tmp_path / "arc.png").stat().st_size > 0


def _shard(path, start, stop, **arrays):
    write_arrays(path, provenance("score", {}, shard=0, image_offset=start, image_stop=stop, dataset="toy"), **arrays)


def test_merge_array_shards_concatenates_in_order_and_is_idempotent(tmp_path):
    values = np.arange(10, dtype=np.float32)
    paths = []
    for shard in range(3):
        start, stop = shard_bounds(10, 3, shard)
        paths.append(tmp_path / f"s{shard}.h5")
        _shard(paths[-1], start, stop, score=values[start:stop], clean_score=values[start:stop] + 1)
    assert merge_array_shards(shard_paths=paths, out_path=tmp_path / "merged.h5", n_images=10) == 10
    merged = read_arrays(tmp_path / "merged.h5", "score", "clean_score")
    np.testing.assert_array_equal(merged["score"], values)
    first = (tmp_path / "merged.h5").read_bytes()
    merge_array_shards(shard_paths=paths, out_path=tmp_path / "merged.h5", n_images=10)
    np.testing.assert_array_equal(read_arrays(tmp_path / "merged.h5", "score")["score"], values)
    assert len((tmp_path / "merged.h5").read_bytes()) == len(first)


def test_merge_array_shards_refuses_gaps_and_short_coverage(tmp_path):
    _shard(tmp_path / "a.h5", 0, 4, score=np.zeros(4))
    _shard(tmp_path / "b.h5", 5, 8, score=np.zeros(3))
    with pytest.raises(ArtifactError, match="b.h5: shard starts at image 5, expected 4"):
        merge_array_shards(shard_paths=[tmp_path / "a.h5", tmp_path / "b.h5"], out_path=tmp_path / "m.h5")
    with pytest.raises(ArtifactError, match="cover 4 images, the image set holds 9"):
        merge_array_shards(shard_paths=[tmp_path / "a.h5"], out_path=tmp_path / "m.h5", n_images=9)
    assert not (tmp_path / "m.h5").exists()


def test_evaluate_discriminator_rejects_a_ten_class_model(tmp_path):
    from port.models import build_model, model_spec, save_model

    spec = model_spec("mlp", 1, 10, 8, [0.5], [0.5])
    save_model(build_model(**spec), spec, tmp_path / "m.pt")
    write_images(tmp_path / "held.h5", np.zeros((4, 8, 8, 1), np.uint8), provenance("x", {}),
                 labels=np.array([0, 0, 1, 1]))
    with pytest.raises(ArtifactError, match="10 classes"):
        evaluate_discriminator(model_path=tmp_path / "m.pt", heldout_path=tmp_path / "held.h5",
                               out_csv=tmp_path / "o.csv", eps=0.1,
                               settings={"eval_steps": 1, "step_factor": 2.5}, seed=0, row={"generator": "g"})
    assert not (tmp_path / "o.csv").exists()
