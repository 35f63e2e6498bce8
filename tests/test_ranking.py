"""Generator ranking: Frechet distance, nearest-real distance, rank table (port.ranking)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from port.artifacts import write_csv
from port.errors import ArtifactError
from port.ranking import frechet_distance, nearest_real_distance, penultimate_features, rank_generators


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # N(0, I) vs N(m, 4I) in 3-d: |m|^2 + 3 * (1 + 4 - 2 * 2) = |m|^2 + 3
    b = rng.normal(size=(20000, 3)) * 2 + np.array([1.0, 2.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(5.0 + 3.0, rel=0.05)


def test_nearest_real_distance_is_zero_for_copies_and_exact_for_a_shift():
    real = np.random.default_rng(1).integers(0, 200, (50, 4, 4, 1), dtype=np.uint8)
    assert nearest_real_distance(real[:10], real) == pytest.approx(0.0, abs=1e-6)
    shifted = real[:1].astype(np.int64)
    shifted[0, 0, 0, 0] += 51  # one pixel moved by 51/255 = 0.2, far from every other image
    assert nearest_real_distance(shifted.astype(np.uint8), real) == pytest.approx(0.2, abs=1e-6)


def test_penultimate_features_are_the_last_linear_layers_inputs():
    import torch

    from port.models import build_model, model_spec

    model = build_model(**model_spec("mlp", 1, 10, 8, [0.5], [0.5])).eval()
    images = np.random.default_rng(2).integers(0, 256, (7, 8, 8, 1), dtype=np.uint8)
    features = penultimate_features(model, images, batch=3)
    assert features.shape == (7, 256)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_allclose(last(torch.from_numpy(features).float()).detach().numpy(), logits.detach().numpy(),
                               rtol=1e-4, atol=1e-5)


def _inputs(tmp_path, arc, frechet, nn, robust):
    names = ["a", "b", "c"]
    # arc_summary.csv: the mean over discriminator seeds ranks, next to the other ARC definition
    write_csv(pd.DataFrame({"generator": names * 2, "metric": ["arc"] * 3 + ["arc_unclipped"] * 3,
                            "mean": [*arc, 9.0, 0.0, 5.0]}), tmp_path / "arc_summary.csv")
    dist, transfer = [], []
    for i, name in enumerate(names):
        dist.append(tmp_path / f"d_{name}.csv")
        write_csv(pd.DataFrame([{"generator": name, "frechet_lanet": frechet[i], "nn_distance": nn[i]}]), dist[-1])
        transfer.append(tmp_path / f"t_{name}.csv")
        write_csv(pd.DataFrame([{"generator": name, "clean_acc": 0.9, "pgd_acc": robust[i]}]), transfer[-1])
    return dict(arc_summary_csv=tmp_path / "arc_summary.csv", distribution_csvs=dist, transfer_csvs=transfer)


def test_rank_table_ranks_every_metric_and_measures_its_agreement(tmp_path):
    # transferred robustness: b > a > c. ARC agrees exactly (lower is better); the Frechet
    # distance puts c first and b last; the nearest-real distance swaps the first two.
    table = rank_generators(**_inputs(tmp_path, arc=[0.02, 0.01, 0.05], frechet=[2.0, 3.0, 1.0], nn=[0.1, 0.2, 0.3],
                                      robust=[0.5, 0.6, 0.3]), out_csv=tmp_path / "generators.csv")
    ranks = table.pivot(index="generator", columns="metric", values="rank")
    assert ranks["transfer_robust_acc"].to_dict() == {"a": 2, "b": 1, "c": 3}
    assert ranks["arc"].to_dict() == {"a": 2, "b": 1, "c": 3}
    gap = table.groupby("metric")["mean_abs_rank_diff"].first()
    assert gap["arc"] == 0 and gap["transfer_robust_acc"] == 0
    assert gap["frechet_lanet"] == pytest.approx((0 + 2 + 2) / 3)
    assert gap["nn_distance"] == pytest.approx((1 + 1 + 0) / 3)
    assert (tmp_path / "generators.csv").is_file()


def test_rank_table_refuses_a_missing_metric(tmp_path):
    inputs = _inputs(tmp_path, [0.1, 0.2, 0.3], [1, 2, 3], [1, 2, 3], [0.3, 0.2, 0.1])
    with pytest.raises(ArtifactError, match="every generator needs every metric"):
        rank_generators(**{**inputs, "distribution_csvs": inputs["distribution_csvs"][:2]},
                        out_csv=tmp_path / "generators.csv")
    assert not (tmp_path / "generators.csv").exists()
