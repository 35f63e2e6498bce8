"""Integration: the real Snakemake DAG on tiny configs (conftest): 8x8 grey digits (`tiny_run`), and
RGB 32x32 images in the CIFAR-10 on-disk format (`rgb_run`). Tests taking `dag` run on both."""

from __future__ import annotations

import copy
import re
import zipfile
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import RGB_DATASET, TINY, run_snakemake

from port import paths

from port.statistics import NO_INTERVAL

DAGS = {"digits": dict(fixture="tiny_run", dataset="digits", image_shape=(8, 8, 1), n_certified=15,
                       discrimination_seeds=[0, 1]),
        "rgb": dict(fixture="rgb_run", dataset=RGB_DATASET, image_shape=(32, 32, 3), n_certified=4,
                    discrimination_seeds=[0])}


@pytest.fixture(params=list(DAGS))
def dag(request):
    """A finished tiny run: `workdir`, `results` (its results/{dataset}), and what differs between runs:
    `image_shape`, `n_certified` (every 30th of 450 digits test images, every 25th of 100 RGB ones),
    `discrimination_seeds`."""
    spec = DAGS[request.param]
    workdir = request.getfixturevalue(spec["fixture"])
    return SimpleNamespace(workdir=workdir, results=workdir / "results" / spec["dataset"], **spec)


@pytest.mark.parametrize("curriculum", [True, False])
def test_the_discriminator_curriculum_plans_each_eps_after_the_previous_one(tmp_path, curriculum):
    """Under discrimination.curriculum, train_discriminator eps1 reads eps0's trained model (a DAG edge)."""
    config = copy.deepcopy(TINY)
    config["datasets"]["digits"]["discrimination"]["curriculum"] = curriculum
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    model = {i: paths.DISCRIMINATOR_MODEL.format(dataset="digits", generator="gan", eps_index=i, seed=0)
             for i in (0, 1)}
    result = run_snakemake(tmp_path, "-n", model[0], model[1])
    assert result.returncode == 0, result.stderr[-3000:]
    inputs = {m["output"].split(", ")[0]: m["input"].split(", ") for m in re.finditer(
        r"^rule train_discriminator:\n\s+input: (?P<input>.*)\n\s+output: (?P<output>.*)$",
        result.stdout + result.stderr, flags=re.M)}
    assert set(inputs) == {model[0], model[1]}
    assert (model[0] in inputs[model[1]]) == curriculum and model[1] not in inputs[model[0]]


@pytest.mark.integration
def test_dag_writes_summary_tables(dag):
    for threat in ("linf", "l2"):
        table = pd.read_csv(dag.results / f"port_{threat}.csv")
        assert sorted(zip(table["method"], table["selection"])) == [("baseline", "none"), ("port", "adaptive"),
                                                                    ("port", "random")]
        for column in ("clean_acc", "pgd_acc", "autoattack_acc"):
            assert table[column].between(0, 1).all(), column
        assert (table["autoattack_acc"] <= table["clean_acc"] + 1e-9).all()
        port = table[table["method"] == "port"]
        baseline = table.set_index("method").loc["baseline"]
        assert (port["n_synthetic"] == 40).all() and baseline["n_synthetic"] == 0  # k = 40
        assert np.allclose(port["gamma"], 0.4) and baseline["gamma"] == 1.0
        assert (table["epochs"] == 2).all() and (table["train_seconds"] > 0).all()
        # one training seed: means without intervals, and no verdict beyond "no interval"
        summary = pd.read_csv(dag.results / f"summary_{threat}.csv")
        assert set(summary["metric"]) == {"clean_acc", "pgd_acc", "autoattack_acc"} and len(summary) == 3 * 3
        assert (summary["n_seeds"] == 1).all() and summary[["sd", "ci_low", "ci_high"]].isna().all().all()
        port_rows = summary[summary["method"] == "port"]
        assert (port_rows["verdict"] == NO_INTERVAL).all() and summary.loc[summary["method"] == "baseline",
                                                                           "verdict"].isna().all()
        single = table.set_index(["method", "selection"])
        for _, row in summary.iterrows():  # the mean of one seed is that seed's value
            assert row["mean"] == pytest.approx(single.loc[(row["method"], row["selection"]), row["metric"]])


@pytest.mark.integration
def test_dag_certifies_smoothed_classifiers(dag):
    table = pd.read_csv(dag.results / "certified.csv")
    assert sorted(set(table["method"])) == ["baseline", "port"]
    assert sorted(set(table["radius"])) == [0.0, 0.25, 0.5]
    for _, run in table.groupby("method"):
        accuracy = run.sort_values("radius")["certified_acc"].to_numpy()
        assert (accuracy[:-1] >= accuracy[1:]).all() and (accuracy <= 1).all()  # falls with the radius
    assert (table["n_certified"] == dag.n_certified).all()
    summary = pd.read_csv(dag.results / "certified_summary.csv")
    assert sorted(set(summary["radius"])) == [0.0, 0.25, 0.5] and (summary["n_seeds"] == 1).all()
    assert (summary.loc[summary["method"] == "port", "verdict"] == NO_INTERVAL).all()
    certificates = pd.read_csv(dag.results / "certify/port-adaptive_small_cnn_seed0.csv")
    assert list(certificates.columns[:6]) == ["idx", "label", "predict", "radius", "correct", "smoothed_predict"]
    assert (dag.results / "certified.png").stat().st_size > 0


@pytest.mark.integration
def test_dag_artifacts_follow_the_convention(dag):
    base = dag.results
    with h5py.File(base / "synthetic/ddpm/images.h5") as handle:
        images = handle["images"]
        assert images.shape == (240, *dag.image_shape) and images.dtype == "uint8"
        assert images.chunks[1:] == dag.image_shape
        assert {"stage", "params_hash", "versions"} <= set(handle.attrs) and handle.attrs["dataset"] == dag.dataset
    for name in ("labels.h5", "filter.h5", "selected/random.h5", "selected/adaptive.h5", "scores.h5"):
        with h5py.File(base / "synthetic/ddpm" / name) as handle:
            assert handle.attrs["dataset"] == dag.dataset, name
    with h5py.File(base / "synthetic/ddpm/labels.h5") as handle:
        assert handle["lanet_probs"].shape == (240, 10) and handle["splitnet_probs"].shape == (240, 10)
    counts = pd.read_csv(base / "synthetic/ddpm/filter_counts.csv")
    assert counts["n_total"].sum() == 240
    with h5py.File(base / "synthetic/ddpm/selected/random.h5") as handle:
        assert len(handle["images"]) == 40 == len(handle["labels"])
    for slot in ("lanet", "splitnet"):
        assert pd.read_csv(base / f"labelers/{slot}/metrics.csv")["test_acc"].between(0, 1).all()
    assert not list(dag.workdir.rglob("*.tmp")), "temporary files left behind"
    logs = {p.relative_to(dag.workdir / "logs").parts[0] for p in (dag.workdir / "logs").rglob("*.log")}
    assert {"prepare_data", "train_ddpm", "sample_shard", "merge_shards", "train_labeler", "pseudo_label",
            "filter_synthetic", "select_synthetic", "train_robust", "evaluate", "summarize", "train_smooth",
            "certify", "summarize_smooth", "plot_synthetic", "plot_training_curves", "merge_labels", "train_gan",
            "discrimination_sets", "train_discriminator", "evaluate_discriminator", "arc_curve", "arc",
            "scorer_sets", "train_scorer", "score_shard", "merge_scores", "transfer_set", "train_transfer", "evaluate_transfer",
            "distribution_metrics", "rank_generators", "summarize_score_groups", "audit_synthetic"} <= logs


@pytest.mark.integration
def test_dag_ranks_generators_by_arc(dag):
    base = dag.results
    seeds = dag.discrimination_seeds
    arc = pd.read_csv(base / "arc.csv")  # one row per generator and discrimination seed
    assert sorted(zip(arc["generator"], arc["seed"])) == [(g, s) for g in ("ddpm", "ddpm-4steps", "gan") for s in seeds]
    assert arc["arc"].between(0, 0.5 * 0.05 * 255).all()  # eps in 1/255, accuracy below chance counted as chance
    assert arc["arc_unclipped"].le(arc["arc"]).all() and arc["arc_unclipped"].ge(-0.5 * 0.05 * 255).all()
    summary = pd.read_csv(base / "arc_summary.csv")
    arc_mean = summary[summary["metric"] == "arc"].set_index("generator")
    assert (arc_mean["n_seeds"] == len(seeds)).all() and arc_mean["ci_low"].isna().all() == (len(seeds) == 1)
    assert np.allclose(arc_mean.loc[arc["generator"], "mean"], arc.groupby("generator")["arc"].transform("mean"))
    assert list(dict.fromkeys(arc["generator"])) == list(arc_mean.sort_values("rank").index)  # ordered by the mean
    for generator in arc_mean.index:
        curve = pd.read_csv(base / f"arc/{generator}.csv")
        assert list(zip(curve["seed"], curve["eps"])) == [(s, e) for s in seeds for e in (0.0, 0.05)]
        assert curve["robust_acc"].between(0, 1).all()
        assert (curve["n_eval"] == 2 * 60).all()  # n_heldout synthetic images and as many real test images
        assert curve["epochs_run"].between(1, 1).all() and set(curve["robust_attack"]) <= {"none", "pgd", "apgd-ce"}
    ranking = pd.read_csv(base / "generators.csv")
    assert sorted(set(ranking["metric"])) == ["arc", "frechet_lanet", "nn_distance", "transfer_robust_acc"]
    assert len(ranking) == 4 * 3 and ranking["rank"].between(1, 3).all()
    assert np.allclose(ranking[ranking["metric"] == "arc"].set_index("generator")["value"],
                       arc_mean["mean"].reindex(ranking[ranking["metric"] == "arc"]["generator"]))
    reference = ranking[ranking["metric"] == "transfer_robust_acc"]
    assert (reference["rank"] == reference["reference_rank"]).all() and (reference["mean_abs_rank_diff"] == 0).all()


@pytest.mark.integration
def test_dag_scores_every_synthetic_image_and_selects_by_score(dag):
    base = dag.results / "synthetic/ddpm"
    with h5py.File(base / "scores.h5") as handle:
        score, clean = handle["score"][()], handle["clean_score"][()]
        assert handle.attrs["n_shards"] == 2
    assert len(score) == 240 and ((score >= 0) & (score <= clean) & (clean <= 1)).all()
    with h5py.File(base / "filter.h5") as handle:
        keep = handle["keep"][()]
    with h5py.File(base / "selected/adaptive.h5") as handle:
        index = handle["source_index"][()]
    assert len(index) == 40 and keep[index].all()
    assert score[index].max() <= np.sort(score[keep])[39]
    groups = pd.read_csv(dag.results / "score_groups.csv")
    assert list(groups["group"]) == [0, 1] and groups["score_mean"].is_monotonic_increasing
    assert groups["n_images"].sum() == keep.sum() and groups["autoattack_acc"].isna().all()


@pytest.mark.integration
def test_dag_audits_every_sampled_generator_and_selects_without_test_duplicates(dag):
    for generator in ("ddpm", "ddpm-4steps", "gan"):
        base = dag.results / "synthetic" / generator
        with h5py.File(base / "audit.h5") as handle:
            flagged, distance = handle["test_duplicate"][()], handle["test_rms_distance"][()]
            assert len(handle["train_lanet_cosine_index"]) == 240 and handle.attrs["dataset"] == dag.dataset
        table = pd.read_csv(base / "audit.csv")
        overall = table[(table["images"] == "synthetic") & (table["class"] == "all") & (table["space"] == "rms")]
        assert overall.set_index("nearest_in").loc["test", "n_within"] == flagged.sum()
        assert (flagged == (distance <= overall["threshold"].iloc[0])).all()
        assert (base / "audit.png").stat().st_size > 0
    with h5py.File(dag.results / "synthetic/ddpm/audit.h5") as handle:
        flagged = handle["test_duplicate"][()]
    with h5py.File(dag.results / "synthetic/ddpm/filter.h5") as handle:
        keep = handle["keep"][()]
    for selection in ("random", "adaptive"):
        with h5py.File(dag.results / f"synthetic/ddpm/selected/{selection}.h5") as handle:
            assert not flagged[handle["source_index"][()]].any()
            assert handle.attrs["test_duplicates_removed"] == (keep & flagged).sum()
    table = pd.read_csv(dag.results / "port_linf.csv").set_index("selection")
    assert table.loc["none", "n_test_duplicates_removed"] == 0
    assert table.loc["random", "n_test_duplicates_removed"] == (keep & flagged).sum()
    assert "n_test_duplicates_removed" in pd.read_csv(dag.results / "summary_linf.csv")


@pytest.mark.integration
def test_report_builds_offline_with_tables_and_figures(dag):
    result = run_snakemake(dag.workdir, "--report", "report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (dag.workdir / "report.html").read_text()
    for name in ("port_linf.csv", "port_l2.csv", "summary_linf.csv", "summary_l2.csv", "certified.csv",
                 "certified_summary.csv", "certified.png", "filter_counts.csv", "arc.csv", "arc_summary.csv", "arc.png", "generators.csv", "score_groups.csv", "score_groups.png",
                 "samples_per_class.png", "discarded.png", "training_curves_linf.png", "history.csv", "audit.csv",
                 "audit.png"):
        assert name in html, name
    assert "<script src=" not in html  # everything inlined: opens offline
    result = run_snakemake(dag.workdir, "--report", "report.zip")
    assert result.returncode == 0, result.stderr[-3000:]
    with zipfile.ZipFile(dag.workdir / "report.zip") as archive:
        names = archive.namelist()
    assert "report/report.html" in names and any(n.endswith("/arc.csv") for n in names)


@pytest.mark.integration
def test_second_run_has_nothing_to_do(dag):
    result = run_snakemake(dag.workdir, "-n", "--cores", "2")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.integration
def test_rgb_dag_reads_cifar10_files_and_runs_every_autoattack_attack(rgb_run):
    base = rgb_run / "results" / RGB_DATASET
    for split, n in (("train", 200), ("test", 100)):
        with h5py.File(base / f"data/{split}.h5") as handle:
            assert handle["images"].shape == (n, 32, 32, 3) and len(set(handle["labels"][()])) == 10
            assert '"kind": "cifar10"' in handle.attrs["params"]
    # Issue 17: APGD-T's gradient check crashed on channels-last RGB tensors. The linf baseline keeps
    # images correct past APGD-CE (it is trained against PGD at the same eps), so APGD-T runs.
    log = (rgb_run / f"logs/evaluate/{RGB_DATASET}/linf/baseline/small_cnn/seed0.log").read_text()
    assert "running apgd-t" in log and "robust accuracy after SQUARE" in log
