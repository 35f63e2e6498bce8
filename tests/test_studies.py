"""The paper's studies (port.studies, port.theory, rules/studies.smk): closed-form W2, the
sample-complexity grid and sets, the filter threshold, the CNN-2/CNN-4 discriminators, and that
every study target plans for cifar10 and digits without entering the default target."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO
from port import errors, settings
from port import paths
from port.artifacts import provenance, read_arrays, read_attrs, read_image_set, write_arrays, write_csv, write_images
from port.labeling import filter_images
from port.models import build_model
from port.settings.studies import sample_sizes
from port.studies import class_subset, filter_study, sample_complexity_set
from port.theory import conditional_w2, gaussian_w2_squared, proxy_distribution, real_distribution
from port.settings.schema import SCHEMA as SCHEMA_FILE

STUDY_TABLES = [paths.GAMMA_STUDY_TABLE, paths.SAMPLE_COMPLEXITY_TABLE, paths.FILTER_STUDY_TABLE, paths.THEOREM1_TABLE,
                paths.NONROBUST_DISCRIMINATOR_TABLE]


@pytest.fixture(scope="module")
def shipped():
    """config.yaml with the schema's defaults, as the Snakefile sees it."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(SCHEMA_FILE))
    return config


def test_w2_equal_covariances_is_the_squared_mean_distance():
    rng = np.random.default_rng(0)
    root = rng.standard_normal((5, 5))
    cov = root @ root.T + np.eye(5)
    a, b = rng.standard_normal(5), rng.standard_normal(5)
    assert gaussian_w2_squared(a, cov, b, cov) == pytest.approx(np.sum((a - b) ** 2), rel=1e-6)


@pytest.mark.parametrize("m1,s1,m2,s2", [(0.0, 1.0, 0.0, 1.0), (1.0, 2.0, -0.5, 0.5), (3.0, 0.1, 3.0, 4.0)])
def test_w2_of_one_dimensional_gaussians(m1, s1, m2, s2):
    assert gaussian_w2_squared([m1], [[s1 ** 2]], [m2], [[s2 ** 2]]) == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2,
                                                                                       abs=1e-9)


def test_conditional_w2_averages_the_per_class_distances():
    means_a, means_b = np.zeros((2, 3)), np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])  # distances 5 and 1
    covs = np.stack([np.eye(3)] * 2)
    assert conditional_w2(means_a, covs, means_b, covs) == pytest.approx(3.0)
    assert conditional_w2(means_a, covs, means_b, covs, class_probs=[0.25, 0.75]) == pytest.approx(2.0)


def test_proxy_at_strength_zero_is_the_real_distribution():
    settings = {"classes": 3, "dim": 4, "mean_scale": 2.0, "mean_shift": 1.0, "cov_scale": 0.5}
    real = real_distribution(settings, seed=0)
    same, moved = (proxy_distribution(real, s, settings, seed=0) for s in (0.0, 1.0))
    assert conditional_w2(real.means, real.covs, same.means, same.covs) == pytest.approx(0.0, abs=1e-6)
    assert conditional_w2(real.means, real.covs, moved.means, moved.covs) >= settings["mean_shift"] * 0.99
    z = np.random.default_rng(1).standard_normal((6, 4))
    np.testing.assert_allclose(real.sample(z, np.arange(6) % 3), same.sample(z, np.arange(6) % 3))


def test_sample_complexity_grid():
    assert sample_sizes(250, 4500, 4) == [250, 1000]  # 4000 is within sqrt(4) of 4500: that point is `all`
    cifar = sample_sizes(2000, 10_000_000 - 10_000, 2)
    assert cifar[0] == 2000 and all(b == 2 * a for a, b in zip(cifar, cifar[1:]))
    assert cifar[-1] * np.sqrt(2) < 9_990_000 <= cifar[-1] * 2 * np.sqrt(2)


def test_sample_complexity_sizes_from_config(shipped):
    assert settings.studies.sample_complexity_sizes(shipped, "digits") == ["250", "1000", paths.ALL_IMAGES]
    sizes = settings.studies.sample_complexity_sizes(shipped, "cifar10")
    # 2K doubling up to the 15M sampled images less the held-out ones: 2K..8.192M, then all
    assert sizes[0] == "2000" and sizes[-1] == paths.ALL_IMAGES and len(sizes) == 14
    cifar2 = {**shipped, "datasets": {**shipped["datasets"]}}
    cifar2["datasets"]["cifar10"] = {**shipped["datasets"]["cifar10"], "studies": {
        **shipped["datasets"]["cifar10"]["studies"],
        "sample_complexity": {**shipped["datasets"]["cifar10"]["studies"]["sample_complexity"], "classes": [1, 9]}}}
    assert int(settings.studies.sample_complexity_sizes(cifar2, "cifar10")[-2]) < 3_000_000  # 2 of 10 classes of 15M


def test_class_subset_renumbers_in_the_given_order():
    mask, labels = class_subset(np.array([9, 1, 3, 1, 9]), [1, 9])
    assert mask.tolist() == [True, True, False, True, True]
    assert labels[mask].tolist() == [1, 0, 0, 1]


def test_sample_complexity_sets_are_nested_and_disjoint_from_the_heldout_set(tmp_path):
    n = 40
    images = np.arange(n, dtype=np.uint8).repeat(4).reshape(n, 2, 2, 1)
    labels = np.arange(n) % 4
    write_images(tmp_path / "images.h5", images, provenance("sample", {}, 0, dataset="toy"))
    write_images(tmp_path / "train.h5", images, provenance("data", {}, 0, dataset="toy", num_classes=4,
                                                             channel_mean=[0.5], channel_std=[0.25]), labels=labels)
    keep = labels != 2
    keep[0] = False
    write_arrays(tmp_path / "filter.h5", provenance("filter", {}, dataset="toy"), keep=keep, labels=labels)
    common = dict(images_path=tmp_path / "images.h5", filter_path=tmp_path / "filter.h5",
                  real_path=tmp_path / "train.h5", n_heldout=4, classes=[1, 3], seed=0)
    sets = {}
    for size in ("heldout", "5", "10", paths.ALL_IMAGES):
        sample_complexity_set(out_path=tmp_path / f"{size}.h5", size=size, **common)
        sets[size] = read_arrays(tmp_path / f"{size}.h5", "source_index")["source_index"]
    assert [len(sets[s]) for s in ("heldout", "5", "10")] == [4, 5, 10]
    assert set(sets["5"]) < set(sets["10"]) < set(sets[paths.ALL_IMAGES])
    assert not set(sets["heldout"]) & set(sets[paths.ALL_IMAGES])
    assert len(sets["heldout"]) + len(sets[paths.ALL_IMAGES]) == int((keep & np.isin(labels, [1, 3])).sum())
    _, subset_labels = read_image_set(tmp_path / "10.h5")
    assert set(subset_labels) <= {0, 1} and read_attrs(tmp_path / "10.h5")["num_classes"] == 2


def test_filter_study_applies_each_threshold(tmp_path):
    lanet = np.array([[0.55, 0.45], [0.80, 0.20], [0.85, 0.15], [0.40, 0.60]])  # preds 0 0 0 1
    splitnet = np.array([[0.30, 0.70], [0.35, 0.65], [0.12, 0.88], [0.20, 0.80]])  # preds 1 1 1 1
    write_arrays(tmp_path / "labels.h5", provenance("pseudo_label", {}, dataset="toy"),
                 labels=lanet.argmax(1), lanet_probs=lanet, splitnet_probs=splitnet)
    # disagreeing images 0, 1, 2 are dropped when both confidences are below the threshold
    expected = {0.0: 4, 0.75: 3, 0.9: 1}
    counts = []
    for threshold, kept in expected.items():
        counts.append(tmp_path / f"counts{threshold}.csv")
        assert filter_images(labels_path=tmp_path / "labels.h5", out_mask=tmp_path / f"f{threshold}.h5",
                             out_counts=counts[-1], threshold=threshold) == kept
    evals = []
    for threshold in expected:
        for seed, acc in ((0, 0.5), (1, 0.7)):
            evals.append(tmp_path / f"eval{threshold}_{seed}.csv")
            write_csv(pd.DataFrame([{"threshold": threshold, "seed": seed, "clean_acc": acc + 0.2, "pgd_acc": acc}]),
                      evals[-1])
    table = filter_study(counts_csvs=counts, eval_csvs=evals, thresholds=list(expected), out_csv=tmp_path / "f.csv")
    pgd = table[table["metric"] == "pgd_acc"].set_index("threshold")
    assert pgd["keep_rate"].to_dict() == {t: k / 4 for t, k in expected.items()}
    assert pgd.loc[0.0, "filter"] == "none" and pgd["mean"].tolist() == pytest.approx([0.6] * 3)
    assert (pgd["n_seeds"] == 2).all() and (pgd["ci_low"] < 0.6).all()


@pytest.mark.parametrize("arch,convs", [("cnn2", 2), ("cnn4", 4)])
@pytest.mark.parametrize("channels,size", [(1, 8), (3, 32)])
def test_nonrobust_discriminator_architectures(arch, convs, channels, size):
    torch.manual_seed(0)
    model = build_model(arch, channels, 2, size, [0.5] * channels, [0.25] * channels).eval()
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == convs
    assert model(torch.rand(3, channels, size, size)).shape == (3, 2)


def test_gamma_variants_train_at_their_gamma(shipped):
    run = settings.studies.recipe_settings(shipped, "digits", paths.gamma_variant(0.7), "small_cnn")
    assert run["gamma"] == 0.7 and run["epochs"] == shipped["datasets"]["digits"]["studies"]["gamma"]["training"]["epochs"]
    assert settings.studies.variant_evaluation(shipped, "digits", "gamma-0.7")["autoattack"] is False
    assert settings.studies.recipe_settings(shipped, "digits", "port-pgd", "small_cnn")["gamma"] == 0.4  # recipe unchanged
    with pytest.raises(errors.ConfigError, match="studies.gamma.values"):
        settings.studies.variant(shipped, "digits", "gamma-0.42")


def test_studies_stay_out_of_the_default_target(shipped):
    defaults = settings.targets.final_targets(shipped)
    assert defaults and not any("/studies/" in target for target in defaults)
    # digits also compares a mixture of its two DDPMs with each of them (docs/mixture.md)
    assert settings.targets.study_targets(shipped) == [p.format(dataset="digits")
                                                  for p in (*STUDY_TABLES, paths.MIXTURE_STUDY_TABLE)]


def test_every_study_target_plans_for_cifar10_and_digits(tmp_path):
    from conftest import run_snakemake

    (tmp_path / "tiny.yaml").write_text("{}\n")  # the shipped config unchanged
    targets = [p.format(dataset=d) for d in ("cifar10", "digits") for p in STUDY_TABLES]
    result = run_snakemake(tmp_path, "-n", *targets, "--quiet", "rules")  # targets before --quiet (nargs)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout + result.stderr, re.M))
    for rule in ("gamma_study", "sample_complexity_study", "filter_study", "theorem1", "nonrobust_discriminator_study"):
        assert stats.get(rule) == "2", rule
