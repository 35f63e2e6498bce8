"""The data-scarcity study (port.scarcity, rules/scarcity.smk): the seeded, class-balanced cut; that
each cut's generator, labelers and scorers train on the cut file alone; the gap column; the plan on
the shipped config; and a tiny run of the study on top of a finished tiny default run."""

from __future__ import annotations

import copy
import re

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, run_snakemake
from port import errors, settings
from port import paths
from port.artifacts import provenance, read_arrays, read_attrs, read_image_set, write_csv, write_images
from port.errors import SettingsError
from port.models import build_model, model_spec, save_model
from port.scarcity import cut_training_set, data_scarcity_study, stratified_cut
from port.settings.schema import SCHEMA as SCHEMA_FILE

STUDY = paths.DATA_SCARCITY_TABLE.format(dataset="digits")


@pytest.fixture
def shipped(shipped_config):
    """A copy of config.yaml with the schema's defaults, as the Snakefile sees it."""
    from snakemake.utils import validate

    config = copy.deepcopy(shipped_config)
    validate(config, str(SCHEMA_FILE))
    return config


def _labels(seed=0):
    """An unbalanced 4-class label vector: 50, 40, 30 and 20 images."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(4), [50, 40, 30, 20]))


def test_cut_is_class_balanced_seeded_and_nested():
    labels = _labels()
    cuts = {n: stratified_cut(labels, n, seed=3) for n in (10, 41, 80)}
    for n, chosen in cuts.items():
        counts = np.bincount(labels[chosen], minlength=4)
        assert len(np.unique(chosen)) == n and counts.max() - counts.min() <= 1, (n, counts)
    np.testing.assert_array_equal(stratified_cut(labels, 41, seed=3), cuts[41])
    assert not np.array_equal(stratified_cut(labels, 41, seed=4), cuts[41])
    assert set(cuts[10]) <= set(cuts[41]) <= set(cuts[80])  # a smaller cut is part of every larger one
    with pytest.raises(SettingsError, match="needs 25 of class 3, the training set has 20"):
        stratified_cut(labels, 100, seed=3)
    with pytest.raises(SettingsError, match="a cut of 141 images out of 140"):
        stratified_cut(labels, 141, seed=3)


def test_cut_file_holds_the_cut_with_its_own_statistics(tmp_path):
    labels = _labels()
    images = np.random.default_rng(1).integers(0, 256, (len(labels), 8, 8, 1)).astype(np.uint8)
    write_images(tmp_path / "train.h5", images, provenance("prepare_data", {}, 0, dataset="toy", num_classes=4,
                                                           channel_mean=[0.5], channel_std=[0.3]), labels=labels)
    assert cut_training_set(train_path=tmp_path / "train.h5", out_path=tmp_path / "cut.h5", n_real=20, seed=3) == 20
    cut_images, cut_labels = read_image_set(tmp_path / "cut.h5", 4)
    chosen = read_arrays(tmp_path / "cut.h5", "source_index")["source_index"]
    np.testing.assert_array_equal(chosen, stratified_cut(labels, 20, seed=3))
    np.testing.assert_array_equal(cut_images, images[chosen])
    np.testing.assert_array_equal(cut_labels, labels[chosen])
    attrs = read_attrs(tmp_path / "cut.h5")
    assert attrs["dataset"] == "toy" and int(attrs["num_classes"]) == 4
    assert float(attrs["channel_mean"][0]) == pytest.approx(images[chosen].mean() / 255)


def _run_files(root, n_real, method, selection, seed, test, train, steps):
    """One run's files as the study's rules write them: test and training-set evaluations, the
    training set (n_real images) and the model (its metadata's steps)."""
    run = root / f"n{n_real}_{method}{selection}_{seed}"
    run.mkdir()
    row = {**settings.training.run_row(paths.run_name(selection) if method == "port" else "baseline", "small_cnn", seed),
           "n_synthetic": 0, "n_synthetic_used": 0, "gamma": 0.4, "epochs": 1, "norm": "linf", "eps": 0.1,
           "autoattack_attacks": "apgd-ce+apgd-t", "train_seconds": 1.0, "n_test": 450}
    write_csv(pd.DataFrame([{**row, "clean_acc": test[0], "pgd_acc": test[1], "autoattack_acc": test[2]}]),
              run / "eval.csv")
    write_csv(pd.DataFrame([{**row, "clean_acc": train[0], "pgd_acc": train[1], "autoattack_acc": np.nan}]),
              run / "eval_train.csv")
    write_images(run / "train.h5", np.zeros((n_real, 8, 8, 1), np.uint8),
                 provenance("data_scarcity_cut", {}, 0, num_classes=10), labels=np.zeros(n_real, np.int64))
    spec = model_spec("small_cnn", 1, 10, 8, [0.5], [0.3])
    save_model(build_model(**spec), spec, run / "model.pt", steps=steps)
    return [run / name for name in ("eval.csv", "eval_train.csv", "train.h5", "model.pt")]


def test_gap_is_robust_train_minus_robust_test(tmp_path):
    rng = np.random.default_rng(0)
    files, expected = [], []
    for n_real, steps in ((50, 300), (120, 302)):
        for method, selection in (("baseline", None), ("port", "adaptive")):
            for seed in (0, 1, 2):
                test, train = rng.uniform(0.3, 0.9, 3), rng.uniform(0.5, 1.0, 2)
                files.append(_run_files(tmp_path, n_real, method, selection, seed, test, train, steps))
                expected.append({"n_real": n_real, "method": method, "seed": seed, "gap": train[1] - test[1]})
    eval_csvs, train_evals, train_sets, models = map(list, zip(*files))
    table = data_scarcity_study(eval_csvs=eval_csvs, train_eval_csvs=train_evals, train_sets=train_sets,
                                model_paths=models, out_csv=tmp_path / "study.csv", out_plot=tmp_path / "study.png")
    assert (tmp_path / "study.png").stat().st_size > 0
    assert pd.read_csv(tmp_path / "study.csv").shape == table.shape
    expected = pd.DataFrame(expected)

    def mean(metric, n_real, method):
        row = table[(table["metric"] == metric) & (table["n_real"] == n_real) & (table["method"] == method)]
        assert len(row) == 1 and row["n_seeds"].item() == 3
        return row

    for n_real in (50, 120):
        for method in ("baseline", "port"):
            gap = mean("robust_gap", n_real, method)["mean"].item()
            assert gap == pytest.approx(mean("robust_train_acc", n_real, method)["mean"].item()
                                        - mean("pgd_acc", n_real, method)["mean"].item())
            assert gap == pytest.approx(expected.query("n_real == @n_real and method == @method")["gap"].mean())
        paired = mean("robust_gap", n_real, "port")  # PORT's gap minus the baseline's, seed by seed
        by_seed = expected[expected["n_real"] == n_real].pivot(index="seed", columns="method", values="gap")
        assert paired["mean_difference"].item() == pytest.approx((by_seed["port"] - by_seed["baseline"]).mean())
        assert paired["verdict"].item() in ("higher", "lower", "no difference")
    assert table.loc[table["n_real"] == 120, ["min_steps", "max_steps"]].drop_duplicates().values.tolist() == [[302, 302]]


def test_run_settings_take_the_study_steps_and_labelers_refuse_a_given_checkpoint(shipped):
    block = shipped["datasets"]["digits"]["studies"]["data_scarcity"]
    run = settings.scarcity.scarcity_training_settings(shipped, "digits", "linf", "baseline", "small_cnn")
    assert (run["epochs"], run["min_steps"], run["model_selection"]) == (1, block["steps"], "last")
    assert run["threat"] == shipped["datasets"]["digits"]["threats"]["linf"] and run["gamma"] == 1.0
    assert settings.scarcity.scarcity_labeler_settings(shipped, "digits", "lanet")["min_steps"] == block["min_steps"]
    runs = settings.scarcity.scarcity_runs(shipped, "digits")
    assert len(runs) == (len(block["sizes"]) + 1) * 3 * len(block["seeds"])
    shipped["datasets"]["digits"]["labelers"]["lanet"]["checkpoint"] = "lanet.pt"
    with pytest.raises(errors.ConfigError, match="labelers.lanet.checkpoint"):
        settings.scarcity.scarcity_labeler_settings(shipped, "digits", "lanet")
    with pytest.raises(errors.ConfigError, match="'google/ddpm-cifar10-32'|training generator 'ddpm'"):
        settings.scarcity.scarcity_generator_model(shipped, "cifar10", "100")


def _planned_jobs(output: str) -> list[dict]:
    """(rule, inputs, outputs) of every job in `snakemake -n` output."""
    jobs = []
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", output, flags=re.M):
        fields = dict(re.findall(r"^    (\w+): (.*)$", body, flags=re.M))
        jobs.append({"rule": rule, "input": fields.get("input", "").split(", "),
                     "output": fields.get("output", "").split(", ")})
    return jobs


def test_each_cut_trains_its_generator_labelers_and_scorers_on_the_cut_file(tmp_path, shipped):
    (tmp_path / "tiny.yaml").write_text("{}\n")  # the shipped config unchanged
    result = run_snakemake(tmp_path, "-n", STUDY)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _planned_jobs(result.stdout + result.stderr)
    n_cuts = len(settings.studies.study(shipped, "digits", "data_scarcity")["sizes"])
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    trains = {"train_scarcity_ddpm": 1, "train_scarcity_labeler": 2, "scarcity_discrimination_sets": 1,
              "scarcity_scorer_sets": 1}
    for rule, per_cut in trains.items():
        assert len(by_rule[rule]) == per_cut * n_cuts, rule
        for job in by_rule[rule]:
            n_real = re.search(r"/data_scarcity/n(\d+)/", job["output"][0]).group(1)
            real = [path for path in job["input"] if "/data/" in path and not path.endswith("test.h5")]
            assert real == [f"results/digits/studies/data_scarcity/n{n_real}/data/train.h5"], job
    for job in by_rule["train_scarcity_scorer"]:  # the scorers' real half: the cut's discrimination set
        n_real = re.search(r"/data_scarcity/n(\d+)/", job["output"][0]).group(1)
        assert job["input"][0] == f"results/digits/studies/data_scarcity/n{n_real}/discriminators/ddpm/data/real.h5"
    for job in by_rule["train_scarcity"]:
        n_real = re.search(r"/data_scarcity/n(\w+)/runs/", job["output"][0]).group(1)
        root = "results/digits" if n_real == paths.ALL_IMAGES else f"results/digits/studies/data_scarcity/n{n_real}"
        assert job["input"][0] == f"{root}/data/train.h5", job
        if "/port-" in job["output"][0]:
            selection = re.search(r"/port-(\w+)/", job["output"][0]).group(1)
            assert job["input"][1:] == [f"{root}/synthetic/ddpm/selected/{selection}.h5"], job
        else:
            assert job["input"][1:] == [], job
    assert len(by_rule["train_scarcity"]) == len(settings.scarcity.scarcity_runs(shipped, "digits"))
    assert len(by_rule["data_scarcity_study"]) == 1 and "train_robust" not in by_rule  # no default run needed


def test_training_set_evaluation_skips_the_runs_validation_split(tmp_path):
    from port.evaluation import evaluate
    from port.data import validation_split

    labels = _labels()
    images = np.random.default_rng(2).integers(0, 256, (len(labels), 8, 8, 1)).astype(np.uint8)
    write_images(tmp_path / "train.h5", images, provenance("prepare_data", {}, 0, num_classes=4, channel_mean=[0.5],
                                                           channel_std=[0.3]), labels=labels)
    spec = model_spec("small_cnn", 1, 4, 8, [0.5], [0.3])
    torch.manual_seed(0)
    save_model(build_model(**spec), spec, tmp_path / "model.pt")
    threat = {"norm": "linf", "eps": 0.1, "step_size": 0.05, "steps": 2}
    settings = {"pgd_steps": 2, "pgd_step_factor": 2.5, "autoattack": False, "n_test": 10}
    whole = evaluate(model_path=tmp_path / "model.pt", test_path=tmp_path / "train.h5", out_csv=tmp_path / "a.csv",
                     threat=threat, settings=settings, seed=0, row={})
    trained = evaluate(model_path=tmp_path / "model.pt", test_path=tmp_path / "train.h5", out_csv=tmp_path / "b.csv",
                       threat=threat, settings={**settings, "trained_on": {"val_fraction": 0.25, "seed": 7}},
                       seed=0, row={})
    assert whole["n_test"] == 10  # n_test applies to a test set, not to the training images
    assert trained["n_test"] == len(validation_split(len(labels), 0.25, 7)[0]) == 105


@pytest.mark.integration
def test_the_study_runs_on_top_of_a_finished_default_run(tiny_run):
    """The tiny config's study (one cut of 80 and `all`, 2 seeds, 4 steps a run): `all` reuses the
    default run's training set and selections, which stay as they were; a second call has nothing to do."""
    reused = tiny_run / paths.SELECTED.format(dataset="digits", generator="ddpm", selection="adaptive")
    before = reused.stat().st_mtime_ns
    result = run_snakemake(tiny_run, "--cores", "2", STUDY)
    assert result.returncode == 0, result.stderr[-4000:]
    assert reused.stat().st_mtime_ns == before
    table = pd.read_csv(tiny_run / STUDY)
    n_all = len(read_image_set(tiny_run / paths.TRAIN.format(dataset="digits"))[1])
    assert sorted(table["n_real"].unique()) == [80, n_all]
    assert set(table["metric"]) == {"clean_acc", "pgd_acc", "autoattack_acc", "clean_train_acc", "robust_train_acc",
                                    "robust_gap"}
    assert (table["n_seeds"] == 2).all() and table["min_steps"].ge(4).all()
    port = table[table["method"] == "port"]
    assert set(port["selection"]) == {"adaptive", "random"} and port["verdict"].notna().all()
    assert (tiny_run / paths.DATA_SCARCITY_PLOT.format(dataset="digits")).stat().st_size > 0
    cut = read_attrs(tiny_run / paths.DATA_SCARCITY_TRAIN.format(dataset="digits", n_real=80))
    assert cut["stage"] == "data_scarcity_cut"
    again = run_snakemake(tiny_run, "-n", STUDY)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
