"""Training on a mixture of generators (port.mixture): shares of k, each member's own lowest scores,
per-image provenance, the config checks, and the study's table."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO
from port import settings
from port import paths
from port.artifacts import (provenance, read_arrays, read_attrs, read_csv, validate_image_set, write_arrays, write_csv,
                            write_images)
from port.errors import ArtifactError, ConfigError, SettingsError
from port.settings.schema import SCHEMA
from port.mixture import arc_fractions, interleaved_members, largest_remainder_shares, select_mixture
from port.models import training_record
from port.studies import mixture_study
from port.training import mixture_record


# ---- shares ------------------------------------------------------------------------------------
def test_largest_remainder_rounding_rule():
    # 7 * (0.5, 0.25, 0.25) = 3.5, 1.75, 1.75: floors 3, 1, 1 leave 2 images, to the largest remainders
    assert largest_remainder_shares(7, [0.5, 0.25, 0.25]) == [3, 2, 2]
    # equal remainders: the member listed first takes the spare image
    assert largest_remainder_shares(10, [1 / 3, 1 / 3, 1 / 3]) == [4, 3, 3]
    assert largest_remainder_shares(2500, [0.6, 0.4]) == [1500, 1000]
    assert largest_remainder_shares(1, [0.5, 0.5]) == [1, 0]


@pytest.mark.parametrize("seed", range(5))
def test_shares_add_up_to_k_exactly(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        fractions = rng.dirichlet(np.ones(rng.integers(2, 6)))
        k = int(rng.integers(1, 100_000))
        shares = largest_remainder_shares(k, fractions.tolist())
        assert sum(shares) == k
        assert all(abs(share - k * f) < 1 for share, f in zip(shares, fractions))  # off by less than one image


def test_arc_weights_favour_the_lower_arc():
    fractions = arc_fractions({"ddpm": 0.5, "stylegan": 1.5}, arc_max=2.0)
    assert fractions == pytest.approx({"ddpm": 0.75, "stylegan": 0.25})  # weights 1.5 and 0.5
    assert arc_fractions({"a": 0.0, "b": 2.0}, arc_max=2.0) == {"a": 1.0, "b": 0.0}
    with pytest.raises(ArtifactError, match="no weight left"):
        arc_fractions({"a": 2.0, "b": 2.0}, arc_max=2.0)


def test_members_are_spread_evenly_over_the_merged_set():
    order = interleaved_members([600, 300, 100])
    assert np.bincount(order).tolist() == [600, 300, 100]
    for start in range(0, 1000, 100):  # every tenth of the set holds each member's share, within one image
        assert np.abs(np.bincount(order[start:start + 100], minlength=3) - [60, 30, 10]).max() <= 1


# ---- selection ---------------------------------------------------------------------------------
def _member(tmp_path, name, n, value, keep, scores):
    """A member's images (every pixel of image i is i % 200 + value, so images can be told apart),
    filter and scores."""
    images = ((np.arange(n) % 200 + value) % 256).astype(np.uint8).repeat(4).reshape(n, 2, 2, 1)
    labels = np.arange(n) % 3
    folder = tmp_path / name
    folder.mkdir()
    write_images(folder / "images.h5", images, provenance("sample", {}, 0, dataset="toy"))
    write_arrays(folder / "filter.h5", provenance("filter", {}, dataset="toy"), keep=keep, labels=labels)
    write_arrays(folder / "scores.h5", provenance("score", {}, dataset="toy"), score=scores)
    return folder


@pytest.fixture
def two_members(tmp_path):
    rng = np.random.default_rng(0)
    # the members' scores are on different scales: pooled, every chosen image would be ddpm's
    a = _member(tmp_path, "ddpm", 3000, 0, rng.random(3000) < 0.8, rng.random(3000))
    b = _member(tmp_path, "gan", 1500, 50, rng.random(1500) < 0.9, 10 + rng.random(1500))
    return tmp_path, {"ddpm": a, "gan": b}


SIXTY_FORTY = {"ddpm": 0.6, "gan": 0.4}


def _select(tmp_path, folders, method="adaptive", k=1000, fractions=SIXTY_FORTY, **extra):
    members = list(folders)
    return select_mixture(images_paths=[folders[m] / "images.h5" for m in members],
                          filter_paths=[folders[m] / "filter.h5" for m in members],
                          scores_paths=[folders[m] / "scores.h5" for m in members],
                          out_path=tmp_path / "mixed.h5", out_csv=tmp_path / "mixed.csv", mixture="ddpm+gan",
                          members=members, method=method, k=k, seed=0,
                          fractions=fractions, **extra)


def test_adaptive_takes_each_share_from_the_members_own_lowest_scores(two_members):
    tmp_path, folders = two_members
    assert _select(tmp_path, folders) == {"ddpm": 600, "gan": 400}
    merged = read_arrays(tmp_path / "mixed.h5", "generator", "source_index", "labels", "score")
    names = json.loads(read_attrs(tmp_path / "mixed.h5")["generator_names"])
    assert names == ["ddpm", "gan"] and len(merged["generator"]) == 1000
    with h5py.File(tmp_path / "mixed.h5") as handle:
        images = handle["images"][:]
    for code, (name, share) in enumerate([("ddpm", 600), ("gan", 400)]):
        filtered = read_arrays(folders[name] / "filter.h5", "keep", "labels")
        scores = read_arrays(folders[name] / "scores.h5", "score")["score"]
        candidates = np.flatnonzero(filtered["keep"])
        lowest = np.sort(candidates[np.argsort(scores[candidates], kind="stable")[:share]])
        mine = merged["generator"] == code
        np.testing.assert_array_equal(np.sort(merged["source_index"][mine]), lowest)
        # per image: its own pseudo-label, score and pixels travel with its generator code
        np.testing.assert_array_equal(merged["labels"][mine], filtered["labels"][merged["source_index"][mine]])
        np.testing.assert_array_equal(merged["score"][mine], scores[merged["source_index"][mine]])
        np.testing.assert_array_equal(images[mine][:, 0, 0, 0], (merged["source_index"][mine] % 200 + 50 * code) % 256)
    summary = read_csv(tmp_path / "mixed.csv")
    assert summary["generator"].tolist() == ["ddpm", "gan"] and summary["n_selected"].tolist() == [600, 400]
    assert read_attrs(tmp_path / "mixed.h5")["generator_shares"] == "ddpm:600,gan:400"


def test_random_samples_each_share_among_the_members_filtered_images(two_members):
    tmp_path, folders = two_members
    _select(tmp_path, folders, method="random", k=999, fractions={"ddpm": 0.5, "gan": 0.5})
    merged = read_arrays(tmp_path / "mixed.h5", "generator", "source_index")
    first = merged["source_index"].copy()
    assert np.bincount(merged["generator"]).tolist() == [500, 499]  # 499.5 each: the first member rounds up
    for code, name in enumerate(folders):
        keep = read_arrays(folders[name] / "filter.h5", "keep")["keep"]
        assert keep[merged["source_index"][merged["generator"] == code]].all()
    assert "score" not in read_arrays(tmp_path / "mixed.h5", "generator")  # random reads no scores
    _select(tmp_path, folders, method="random", k=999, fractions={"ddpm": 0.5, "gan": 0.5})
    np.testing.assert_array_equal(read_arrays(tmp_path / "mixed.h5", "source_index")["source_index"], first)


def test_each_members_test_duplicates_are_left_out_and_counted(two_members):
    """With the members' audits (audit.drop), a flagged image is never chosen, even among the
    lowest scores, and the merged set and its summary count what left."""
    tmp_path, folders = two_members
    flagged = {}
    for name, folder in folders.items():
        keep = read_arrays(folder / "filter.h5", "keep")["keep"]
        scores = read_arrays(folder / "scores.h5", "score")["score"]
        candidates = np.flatnonzero(keep)
        lowest = candidates[np.argsort(scores[candidates], kind="stable")[:7]]  # ones adaptive would take
        mask = np.zeros(len(keep), bool)
        mask[lowest] = True
        mask[np.flatnonzero(~keep)[:3]] = True  # flagged but filtered out anyway: not counted
        write_arrays(folder / "audit.h5", provenance("audit", {}, dataset="toy"), test_duplicate=mask)
        flagged[name] = mask
    _select(tmp_path, folders, audit_paths=[folders[m] / "audit.h5" for m in folders])
    merged = read_arrays(tmp_path / "mixed.h5", "generator", "source_index")
    for code, name in enumerate(folders):
        assert not flagged[name][merged["source_index"][merged["generator"] == code]].any()
    assert read_attrs(tmp_path / "mixed.h5")["test_duplicates_removed"] == 14
    assert read_csv(tmp_path / "mixed.csv")["n_test_duplicates_removed"].tolist() == [7, 7]


def test_a_member_with_too_few_filtered_images_is_named_with_the_numbers(two_members):
    tmp_path, folders = two_members
    n_gan = int(read_arrays(folders["gan"] / "filter.h5", "keep")["keep"].sum())
    with pytest.raises(ArtifactError, match=rf"member 'gan' has 2000 of k=2500 .*only {n_gan} passed the filter"):
        _select(tmp_path, folders, k=2500, fractions={"ddpm": 0.2, "gan": 0.8})
    assert not (tmp_path / "mixed.h5").exists() and not (tmp_path / "mixed.csv").exists()


def test_weights_arc_read_the_members_arc(two_members):
    tmp_path, folders = two_members
    write_csv(pd.DataFrame({"generator": ["ddpm", "gan", "ddpm", "gan"], "metric": ["arc", "arc", "fid", "fid"],
                            "mean": [0.5, 1.0, 9.0, 9.0]}), tmp_path / "arc_summary.csv")
    # the grid spans 0..4/255: ARC_max = 0.5 * 4 = 2, weights 1.5 and 1.0
    arc = {"fractions": None, "arc_summary": tmp_path / "arc_summary.csv", "eps_grid": [0.0, 4 / 255]}
    assert _select(tmp_path, folders, method="random", **arc) == {"ddpm": 600, "gan": 400}
    write_csv(pd.DataFrame({"generator": ["ddpm"], "metric": ["arc"], "mean": [0.5]}), tmp_path / "arc_summary.csv")
    with pytest.raises(ArtifactError, match=r"no ARC for \['gan'\]"):
        _select(tmp_path, folders, method="random", **arc)


@pytest.mark.parametrize("method,k", [("confidence", 10), ("group0", 10), ("adaptive", None)])
def test_a_mixture_refuses_selections_without_a_k_to_split(two_members, method, k):
    tmp_path, folders = two_members
    with pytest.raises(SettingsError, match="mixture 'ddpm\\+gan'"):
        _select(tmp_path, folders, method=method, k=k)


def test_provenance_reaches_the_trained_model_and_its_table_row(two_members):
    tmp_path, folders = two_members
    _select(tmp_path, folders)
    validate_image_set(tmp_path / "mixed.h5", 3, image_shape=(2, 2, 1))  # what the trainer checks before it reads
    record = mixture_record(tmp_path / "mixed.h5")
    assert record == {"generator": "ddpm+gan", "generator_shares": "ddpm:600,gan:400"}
    assert training_record({"gamma": 0.4, **record})["generator_shares"] == "ddpm:600,gan:400"
    assert "generator" not in training_record({"gamma": 0.4})  # one generator's runs: columns as before
    assert mixture_record(folders["ddpm"] / "images.h5") == {}


# ---- config ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped_validated():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(SCHEMA))
    return config


G = "datasets.digits.generators"


@pytest.mark.parametrize("change,message", [
    (lambda d: d["generators"]["ddpm+ddpm-cond"].update(of={"ddpm": 0.5, "nope": 0.5}), "'nope' is not a key"),
    (lambda d: d["generators"].update({"mix2": {"kind": "mixture", "of": {"ddpm+ddpm-cond": 0.5, "gan": 0.5}}}),
     "is a mixture itself"),
    (lambda d: d["generators"]["ddpm+ddpm-cond"].update(of={"ddpm": 0.5, "ddpm-cond": 0.6}), "sum to 1.1, not 1"),
    (lambda d: d["generators"]["ddpm+ddpm-cond"].update(of={"ddpm": 1.0}), "two or more generators"),
    (lambda d: d["generators"]["ddpm+ddpm-cond"].update(weights="arc"), "list the members"),
    (lambda d: d["generators"]["ddpm+ddpm-cond"].update(of=["ddpm", "ddpm-4steps"], weights="arc"),
     r"add \['ddpm-4steps'\] to generator_ranking"),
    (lambda d: d["generators"]["ddpm+ddpm-cond"].update(model="ddpm"), "model do not apply to kind mixture"),
    (lambda d: d["generator_ranking"]["generators"].append("ddpm+ddpm-cond"), "generator_ranking.generators: "
     "'ddpm\\+ddpm-cond' is a mixture"),
    (lambda d: d["generators"].update({"a+b": dict(d["generators"]["ddpm"])}), "only a kind mixture may have"),
    (lambda d: d["training"].update(generator="ddpm+ddpm-cond") or d["selection"].update(methods=["confidence"]),
     "selection.methods: \\['confidence'\\] on mixture"),
    (lambda d: d["training"].update(generator="ddpm+ddpm-cond") or d["recipe_study"].update(selection="confidence"),
     "recipe_study.selection: \\['confidence'\\] on mixture"),
    (lambda d: d["training"].update(generator="ddpm+ddpm-cond") or d["score_groups"].update(enabled=True),
     "score_groups.enabled"),
    (lambda d: d["training"].update(generator="ddpm+ddpm-cond"), "studies.sample_complexity.generator"),
    (lambda d: d["studies"]["mixture"].update(mixture="ddpm"), "not a kind mixture generator"),
])
def test_config_refuses_what_a_mixture_cannot_do(shipped_validated, change, message):
    bad = copy.deepcopy(shipped_validated)
    change(bad["datasets"]["digits"])
    with pytest.raises(ConfigError, match=message):
        settings.checks.check_config(bad)


def test_a_mixture_as_the_training_generator(shipped_validated):
    config = copy.deepcopy(shipped_validated)
    digits = config["datasets"]["digits"]
    digits["training"]["generator"] = "ddpm+ddpm-cond"
    for study_name in ("sample_complexity", "filter"):
        digits["studies"][study_name]["generator"] = "ddpm"
    settings.checks.check_config(config)
    assert settings.generation.selected_path(config, "digits", "ddpm+ddpm-cond", "adaptive") == \
        "results/digits/mixtures/ddpm+ddpm-cond/selected/adaptive.h5"
    assert "results/digits/synthetic/ddpm-cond/samples_per_class.png" in settings.targets.final_targets(config)
    record = settings.evaluation.run_config(config, "digits", "linf", "small_cnn", "port-adaptive")["generator"]
    assert record == {"name": "ddpm+ddpm-cond", "kind": "mixture", "of": {"ddpm": 0.5, "ddpm-cond": 0.5}}


def test_mixture_study_variants(shipped_validated):
    runs = settings.studies.mixture_study_runs(shipped_validated, "digits", paths.RECIPE_EVAL)
    assert len(runs) == 3 * 3 and "results/digits/recipe/on-ddpm+ddpm-cond/small_cnn/seed2/eval.csv" in runs
    chosen = settings.studies.variant(shipped_validated, "digits", "on-ddpm-cond")
    assert chosen["generator"] == "ddpm-cond" and chosen["training"] == {"epochs": 8}
    assert settings.studies.recipe_synthetic(shipped_validated, "digits", "on-ddpm+ddpm-cond") == \
        "results/digits/mixtures/ddpm+ddpm-cond/selected/adaptive.h5"
    assert settings.studies.recipe_row(shipped_validated, "digits", "on-ddpm", "small_cnn", 0)["generator"] == "ddpm"
    assert "generator" not in settings.studies.recipe_row(shipped_validated, "digits", "port-pgd", "small_cnn", 0)
    with pytest.raises(ConfigError, match="on-<g>"):
        settings.studies.variant(shipped_validated, "digits", "on-gan")  # not in the study


# ---- the study's table -------------------------------------------------------------------------
def test_mixture_study_pairs_the_mixture_with_each_member(tmp_path):
    csvs = []
    for generator, offset in (("ddpm", 0.0), ("ddpm-cond", 0.1), ("mix", 0.05)):
        for seed in range(3):
            row = {"variant": f"on-{generator}", "generator": generator, "architecture": "small_cnn", "seed": seed,
                   "clean_acc": 0.8 + offset + 0.01 * seed, "pgd_acc": 0.5 + 0.01 * seed + 0.001 * seed * (offset > 0)}
            if generator == "mix":
                row["generator_shares"] = "ddpm:5,ddpm-cond:5"
            csvs.append(tmp_path / f"{generator}{seed}.csv")
            write_csv(pd.DataFrame([row]), csvs[-1])
    table = mixture_study(eval_csvs=csvs, mixture="mix", out_csv=tmp_path / "mixture.csv")
    clean = table[(table["metric"] == "clean_acc") & (table["generator"] == "mix")].set_index("compared_to")
    assert clean.loc["ddpm", "mean_difference"] == pytest.approx(0.05)
    assert clean.loc["ddpm-cond", "mean_difference"] == pytest.approx(-0.05)
    assert clean.loc["ddpm", "verdict"] == "higher" and clean.loc["ddpm-cond", "verdict"] == "lower"
    assert (clean["generator_shares"] == "ddpm:5,ddpm-cond:5").all()
    assert table["generator"].drop_duplicates().tolist() == ["ddpm", "ddpm-cond", "mix"]  # members first


# ---- planning ----------------------------------------------------------------------------------
@pytest.mark.integration
def test_cifar10_and_the_wang_preset_plan_with_a_ddpm_stylegan_mixture(tmp_path):
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cifar10 = shipped["datasets"]["cifar10"]
    one_generator = {"sample_complexity": {"generator": "ddpm"}, "filter": {"generator": "ddpm"}}
    override = {"datasets": {
        "cifar10": {"training": {"generator": "ddpm+stylegan"}, "score_groups": {"enabled": False},
                    "studies": one_generator},
        # the adaptive Wang preset on the mixture of cifar10's two generators
        "cifar10-wang2023-port": {"generators": {name: cifar10["generators"][name]
                                                 for name in ("ddpm", "stylegan", "ddpm+stylegan")},
                                  "generator_ranking": cifar10["generator_ranking"],
                                  "training": {"generator": "ddpm+stylegan"}}}}
    (tmp_path / "mixture.yaml").write_text(yaml.safe_dump(override))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                             "--configfile", str(tmp_path / "mixture.yaml"), "-n",
                             "results/cifar10/port_linf.csv", "results/cifar10-wang2023-port/port_linf.csv"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for dataset in ("cifar10", "cifar10-wang2023-port"):
        assert f"results/{dataset}/mixtures/ddpm+stylegan/selected/adaptive.h5" in result.stdout
        assert f"results/{dataset}/arc_summary.csv" in result.stdout  # weights arc: ARC decides the shares
        assert f"results/{dataset}/synthetic/stylegan/scores.h5" in result.stdout  # each member's own scores


@pytest.mark.integration
def test_the_selection_rule_merges_the_members_and_training_records_the_mixture(tmp_path):
    """Rule select_mixture on members whose files are already there (a finished run's), then PORT
    training on its output: the model's metadata and table row name the mixture and its shares."""
    from conftest import run_snakemake

    from port.training import train

    rng = np.random.default_rng(0)
    for member in ("ddpm", "ddpm-cond"):
        folder = tmp_path / "results" / "digits" / "synthetic" / member
        folder.mkdir(parents=True)
        n = 300
        labels = rng.integers(0, 10, n)
        write_images(folder / "images.h5", rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
                     provenance("sample", {}, 0, dataset="digits"))
        write_arrays(folder / "filter.h5", provenance("filter", {}, dataset="digits"), keep=rng.random(n) < 0.9,
                     labels=labels)
        write_arrays(folder / "scores.h5", provenance("score", {}, dataset="digits"), score=rng.random(n))
    # no audit here (each member's audit drop is test_each_members_test_duplicates_are_left_out_and_counted):
    # with it, the rule would need the members' audits, and Snakemake would build the chain to make them
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({"datasets": {"digits": {"selection": {"k": 101},
                                                                                "audit": {"drop": False}}}}))
    target = paths.MIXTURE_SELECTED.format(dataset="digits", mixture="ddpm+ddpm-cond", selection="adaptive")
    result = run_snakemake(tmp_path, "--cores", "1", target)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rule select_mixture" in result.stdout + result.stderr and "rule merge_shards" not in result.stdout
    merged = read_arrays(tmp_path / target, "generator")["generator"]
    assert np.bincount(merged).tolist() == [51, 50]  # 50.5 each: the first member takes the spare image
    summary = read_csv(tmp_path / target.replace(".h5", ".csv"))
    assert summary["generator"].tolist() == ["ddpm", "ddpm-cond"]

    images, labels = rng.integers(0, 256, (120, 8, 8, 1), dtype=np.uint8), np.arange(120) % 10
    write_images(tmp_path / "train.h5", images, provenance("prepare_data", {}, 0, dataset="digits", num_classes=10,
                                                           channel_mean=[0.5], channel_std=[0.25]), labels=labels)
    summary = train(train_path=tmp_path / "train.h5", model_out=tmp_path / "model.pt",
                    history_out=tmp_path / "history.csv", checkpoint_path=tmp_path / "checkpoint.pt",
                    settings={"arch": "small_cnn", "epochs": 1, "batch_size": 32, "lr": 0.05, "gamma": 0.4,
                              "val_fraction": 0.1, "threat": None, "model_selection": "last"},
                    seed=0, synthetic_path=tmp_path / target, progress=False)
    assert training_record(summary)["generator"] == "ddpm+ddpm-cond"
    assert training_record(summary)["generator_shares"] == "ddpm:51,ddpm-cond:50"

    from port.export import export_robustbench

    write_csv(pd.DataFrame([{"norm": "linf", "eps": 0.1, "clean_acc": 0.5, "pgd_acc": 0.2, "autoattack_acc": 0.1,
                             "n_test": 10, "autoattack_attacks": "standard"}]), tmp_path / "eval.csv")
    info = export_robustbench(model_path=tmp_path / "model.pt", eval_path=tmp_path / "eval.csv",
                              info_out=tmp_path / "rb.json", weights_out=tmp_path / "rb.pt", run="linf/port-adaptive",
                              dataset="digits", run_config={"generator": {"name": "ddpm+ddpm-cond"}})
    assert json.loads((tmp_path / "rb.json").read_text())["generator_shares"] == "ddpm:51,ddpm-cond:50" == \
        info["generator_shares"]


def test_seed_summaries_name_the_mixture_and_its_shares():
    from port.reporting import SEED_METRICS, THREAT_KEYS, seed_table

    runs = pd.DataFrame([{"method": method, "selection": selection, "architecture": "small_cnn", "seed": seed,
                          "norm": "linf", "eps": 0.1, "clean_acc": 0.9 + 0.01 * seed + bump,
                          "pgd_acc": 0.5 + 0.01 * seed + bump, "autoattack_acc": np.nan,
                          **({"generator": "ddpm+gan", "generator_shares": "ddpm:6,gan:4"} if method == "port" else {})}
                         for method, selection, bump in (("baseline", "none", 0.0), ("port", "adaptive", 0.02))
                         for seed in range(3)])
    table = seed_table(runs, SEED_METRICS, THREAT_KEYS)
    port = table[table["method"] == "port"]
    assert (port["generator_shares"] == "ddpm:6,gan:4").all() and (port["generator"] == "ddpm+gan").all()
    assert port["mean_difference"].to_numpy() == pytest.approx([0.02, 0.02])
    assert table[table["method"] == "baseline"]["generator"].isna().all()
