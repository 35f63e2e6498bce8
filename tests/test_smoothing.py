"""Randomized-smoothing certification: the Clopper-Pearson bound, CERTIFY/PREDICT on classifiers
whose noise statistics are known exactly, reproducible per-image certificates, certified accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from scipy.stats import binomtest, norm

from port.artifacts import provenance, read_csv, save_torch, write_images
from port.models import build_model, model_spec, save_model
from port.smoothing import Smooth, certified_accuracy, certify_dataset, lower_confidence_bound

SHAPE = (1, 4, 4)  # one tiny CHW image: noise is cheap, the statistics are what matter


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Constant(nn.Module):
    """Always answers `label`, whatever the input: the best any base classifier can do."""

    def __init__(self, label: int, num_classes: int):
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(torch.tensor(label), num_classes).float())

    def forward(self, x):
        return self.logits.expand(len(x), -1)


class NoiseThreshold(nn.Module):
    """Class 0 when the first pixel's noise (the clean image is zero) is below sigma * Phi^-1(p0), else
    class 1: a deterministic function of the noisy input that answers 0 with probability exactly p0."""

    def __init__(self, sigma: float, p0: float, num_classes: int = 2):
        super().__init__()
        self.threshold, self.num_classes = sigma * norm.ppf(p0), num_classes

    def forward(self, x):
        return torch.nn.functional.one_hot((x[:, 0, 0, 0] >= self.threshold).long(), self.num_classes).float()


# --- the Clopper-Pearson lower bound -------------------------------------------------------------

COUNTS = [(0, 1, 0.001), (1, 1, 0.001), (0, 10, 0.05), (3, 10, 0.05), (10, 10, 0.05), (1, 100, 0.01),
          (55, 100, 0.001), (0, 10000, 0.001), (5000, 10000, 0.001), (9990, 10000, 0.001), (10000, 10000, 0.001),
          (99000, 100000, 0.001)]


@pytest.mark.parametrize("k,n,alpha", COUNTS)
def test_lower_bound_is_one_sided_clopper_pearson(k, n, alpha):
    # the lower end of the two-sided exact interval at level 1 - 2 alpha is the one-sided alpha bound
    expected = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
    assert lower_confidence_bound(k, n, alpha) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("k,n,alpha", COUNTS)
def test_lower_bound_matches_statsmodels(k, n, alpha):
    stats = pytest.importorskip("statsmodels.stats.proportion", reason="statsmodels is optional (Cohen et al.'s bound)")
    expected = stats.proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
    assert lower_confidence_bound(k, n, alpha) == pytest.approx(expected, rel=1e-9, abs=1e-12)


# --- CERTIFY and PREDICT -------------------------------------------------------------------------


@pytest.mark.parametrize("n,alpha,sigma", [(100, 0.001, 0.25), (1000, 0.01, 0.5), (5000, 0.001, 1.0)])
def test_perfect_classifier_gets_the_closed_form_radius(n, alpha, sigma):
    smooth = Smooth(Constant(2, num_classes=4), num_classes=4, sigma=sigma)
    prediction, radius = smooth.certify(torch.rand(SHAPE), n0=10, n=n, alpha=alpha, batch_size=64,
                                        generator=seeded(0))
    p_lower = alpha ** (1 / n)  # all n votes for the class: the Clopper-Pearson bound is alpha^(1/n)
    assert lower_confidence_bound(n, n, alpha) == pytest.approx(p_lower, rel=1e-12)
    assert prediction == 2 and radius == pytest.approx(sigma * norm.ppf(p_lower), rel=1e-9)
    assert smooth.predict(torch.rand(SHAPE), n=n, alpha=alpha, batch_size=64, generator=seeded(1)) == 2


def test_no_radius_above_about_080_at_n_10000_alpha_0001_sigma_025():
    n, alpha, sigma = 10_000, 0.001, 0.25
    smooth = Smooth(Constant(0, num_classes=10), num_classes=10, sigma=sigma)
    _, radius = smooth.certify(torch.zeros(SHAPE), n0=100, n=n, alpha=alpha, batch_size=n, generator=seeded(0))
    assert 0.79 < radius < 0.81
    # the radius grows with the votes nA, so nA = n (the perfect classifier) is the largest there is
    bounds = [lower_confidence_bound(k, n, alpha) for k in range(0, n + 1, 50)]
    assert np.all(np.diff(bounds) > 0) and bounds[-1] == pytest.approx(alpha ** (1 / n))
    assert sigma * norm.ppf(max(bounds)) == pytest.approx(radius, rel=1e-9)


def test_coin_flip_classifier_abstains_in_certify_and_predict():
    sigma, n = 0.5, 1000
    smooth = Smooth(NoiseThreshold(sigma, 0.5), num_classes=2, sigma=sigma)
    x = torch.zeros(SHAPE)
    counts = smooth._sample_noise(x, n, batch_size=128, generator=seeded(3))
    assert counts.sum() == n and 400 < counts[0] < 600  # really a fair coin over the noise
    assert smooth.certify(x, n0=100, n=n, alpha=0.001, batch_size=128, generator=seeded(3)) == (Smooth.ABSTAIN, 0.0)
    assert smooth.predict(x, n=n, alpha=0.001, batch_size=128, generator=seeded(3)) == Smooth.ABSTAIN


def test_55_45_split_abstains_with_few_samples_and_certifies_with_many():
    sigma = 0.25
    smooth = Smooth(NoiseThreshold(sigma, 0.55, num_classes=3), num_classes=3, sigma=sigma)
    x = torch.zeros(SHAPE)
    # n0 = 1000 selects the 55% class (100 draws may well not); then 100 votes bound it below 0.5
    assert smooth.certify(x, n0=1000, n=100, alpha=0.001, batch_size=500, generator=seeded(5)) == (Smooth.ABSTAIN, 0.0)
    # the abstention is for lack of samples: with 100,000 the 55% class is certified, with a small radius
    prediction, radius = smooth.certify(x, n0=1000, n=100_000, alpha=0.001, batch_size=50_000, generator=seeded(5))
    assert prediction == 0 and 0 < radius < sigma * norm.ppf(0.55)


def test_sample_noise_is_reproducible_and_unclamped():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(len(x), 2)

    smooth = Smooth(Recorder(), num_classes=2, sigma=1.0)
    counts = [smooth._sample_noise(torch.full(SHAPE, 0.5), 30, 8, seeded(seed)) for seed in (9, 9, 10)]
    assert [len(batch) for batch in seen[:4]] == [8, 8, 8, 6] and counts[0].tolist() == [30, 0]
    first, again, other = (torch.cat(seen[i:i + 4]) for i in (0, 4, 8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.min() < 0 and first.max() > 1  # noise is added in pixel space and never clamped


# --- certify_dataset and certified accuracy ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_problem(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoothing")
    mean, std = [0.5], [0.25]
    torch.manual_seed(0)
    model = build_model("mlp", 1, 3, 8, mean, std)
    save_model(model, model_spec("mlp", 1, 3, 8, mean, std), root / "model.pt")
    images = np.random.default_rng(0).integers(0, 256, (9, 8, 8, 1), dtype=np.uint8)
    attrs = provenance("prepare_data", {}, 0, dataset="toy", num_classes=3, channel_mean=mean, channel_std=std)
    write_images(root / "test.h5", images, attrs, labels=np.arange(9) % 3)
    return root


SETTINGS = dict(sigma=0.1, n0=10, n=50, alpha=0.001, batch_size=25, skip=2)


def test_same_seed_gives_the_same_certificates(tiny_problem):
    model, test = tiny_problem / "model.pt", tiny_problem / "test.h5"
    frame = certify_dataset(model_path=model, test_path=test, out_csv=tiny_problem / "a.csv", settings=SETTINGS, seed=7)
    certify_dataset(model_path=model, test_path=test, out_csv=tiny_problem / "b.csv", settings=SETTINGS, seed=7)
    a, b = (read_csv(tiny_problem / name) for name in ("a.csv", "b.csv"))
    assert list(a.columns) == ["idx", "label", "predict", "radius", "correct", "smoothed_predict", "seconds"]
    assert a["idx"].tolist() == [0, 2, 4, 6, 8] and (a["seconds"] > 0).all()
    assert (a["radius"] > 0).sum() >= 3  # real certificates, whose votes depend on the noise drawn
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
    pd.testing.assert_frame_equal(frame.drop(columns="seconds"), a.drop(columns="seconds"), check_dtype=False)
    assert (a["correct"] == (a["predict"] == a["label"])).all()
    # each image's noise depends on (seed, idx) only, not on which other images are certified
    every_image = certify_dataset(model_path=model, test_path=test, out_csv=tiny_problem / "c.csv",
                                  settings={**SETTINGS, "skip": 1}, seed=7)
    common = every_image[every_image["idx"] % 2 == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(common.drop(columns="seconds"), a.drop(columns="seconds"), check_dtype=False)


class Killed(Exception):
    """Stands for the job being killed part way."""


def test_killed_certification_resumes_from_its_checkpoint_to_the_same_table(tiny_problem, monkeypatch):
    model, test = tiny_problem / "model.pt", tiny_problem / "test.h5"
    checkpoint = tiny_problem / "certify_ckpt.pt"
    reference = certify_dataset(model_path=model, test_path=test, out_csv=tiny_problem / "ref.csv", settings=SETTINGS,
                                seed=3)
    calls, kill_at = [], [4]
    original = Smooth.certify

    def dies_on_the_fourth_image(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == kill_at[0]:
            raise Killed
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Smooth, "certify", dies_on_the_fourth_image)
    with pytest.raises(Killed):
        certify_dataset(model_path=model, test_path=test, out_csv=tiny_problem / "resumed.csv", settings=SETTINGS,
                        seed=3, checkpoint_path=checkpoint,
                        checkpoint_seconds=0.0)
    assert checkpoint.is_file() and not (tiny_problem / "resumed.csv").exists()
    calls.clear()
    kill_at[0] = None
    resumed = certify_dataset(model_path=model, test_path=test, out_csv=tiny_problem / "resumed.csv",
                              settings=SETTINGS, seed=3, checkpoint_path=checkpoint)
    assert len(calls) == 2  # images 6 and 8: the first three came from the checkpoint
    pd.testing.assert_frame_equal(resumed.drop(columns="seconds"), reference.drop(columns="seconds"))
    assert not checkpoint.exists()
    # a checkpoint of other settings is ignored
    save_torch({"run_hash": "other", "rows": [{"idx": 0}]}, checkpoint)
    calls.clear()
    certify_dataset(model_path=model, test_path=test, out_csv=tiny_problem / "again.csv", settings=SETTINGS, seed=3,
                    checkpoint_path=checkpoint)
    assert len(calls) == 5


def test_certified_accuracy_needs_correct_and_radius():
    frame = pd.DataFrame({"predict": [0, 1, -1, 2, 1], "label": [0, 1, 2, 0, 1],
                          "radius": [0.1, 0.6, 0.0, 0.9, 0.3], "correct": [1, 1, 0, 0, 1]})
    # the wrong answer with radius 0.9 and the abstention never count
    assert certified_accuracy(frame, [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]) == pytest.approx([0.6, 0.6, 0.4, 0.2, 0.0, 0.0])
