"""The cost plan (port.plan): counts from the workflow's own DAG, rates from bench/results JSON files."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, run_snakemake
from snakemake.utils import validate

from port import plan
from port.errors import ArtifactError, ConfigError
from port.settings.schema import SCHEMA as SCHEMA_FILE

H200 = "gpu-h200-2026-11-27"


def planned(config: dict, dataset: str, tmp_path, device: str = H200) -> pd.DataFrame:
    rates = plan.RateBook.load(plan.device_folder(device))
    return plan.plan_table(plan.dag_jobs(config, dataset, tmp_path), rates, plan.dataset_facts(config, dataset), config)


def row(table: pd.DataFrame, rule: str, part: str = "") -> pd.Series:
    found = table[(table["rule"] == rule) & (table["part"].fillna("") == part)]
    assert len(found) == 1, table[["rule", "part"]]
    return found.iloc[0]


@pytest.fixture(scope="module")
def cifar10_plan(shipped_config, tmp_path_factory):
    return planned(shipped_config, "cifar10", tmp_path_factory.mktemp("plan"))


def test_twice_the_images_or_steps_is_twice_the_sampling_hours(shipped_config, cifar10_plan, tmp_path):
    base = row(cifar10_plan, "sample_shard", "ddpm")
    assert base["jobs"] == shipped_config["datasets"]["cifar10"]["generators"]["ddpm"]["n_shards"]
    for key in ("n_images", "steps"):
        config = copy.deepcopy(shipped_config)
        config["datasets"]["cifar10"]["generators"]["ddpm"][key] *= 2
        doubled = row(planned(config, "cifar10", tmp_path), "sample_shard", "ddpm")
        assert doubled["gpu_hours"] == pytest.approx(2 * base["gpu_hours"], rel=1e-9), key
        assert doubled["work"] == pytest.approx(2 * base["work"], rel=1e-9), key


def test_every_rate_names_the_benchmark_file_it_comes_from(cifar10_plan):
    rated = cifar10_plan[cifar10_plan["gpu_hours"].notna() & (cifar10_plan["rule"] != "total")]
    assert {"sample_shard", "train_robust", "score_shard", "train_discriminator"} <= set(rated["rule"])
    for _, r in rated.iterrows():
        for name in r["rate_file"].split(";"):
            assert name.startswith(f"bench/results/{H200}/"), r["rule"]
            assert json.loads((REPO / name).read_text())["environment"]["device_type"] == "cuda"
    sampling = json.loads((REPO / f"bench/results/{H200}/sampling.json").read_text())
    unet_rate = next(r["rate"] for r in sampling["results"] if r["what"].startswith("ddpm "))
    ddpm = row(cifar10_plan, "sample_shard", "ddpm")
    assert float(ddpm["rate"]) == pytest.approx(unet_rate, rel=1e-5)
    assert ddpm["gpu_hours"] == pytest.approx(ddpm["work"] / unet_rate / 3600, rel=1e-5)


def test_a_stage_without_a_measured_rate_says_so_and_the_total_excludes_it(cifar10_plan):
    stylegan = row(cifar10_plan, "sample_shard", "stylegan")  # no StyleGAN benchmark
    assert pd.isna(stylegan["gpu_hours"]) and "no measured rate" in stylegan["note"]
    wrn28 = row(cifar10_plan, "train_labeler", "lanet")  # WRN-28-10: no result in pgd_training.json
    assert pd.isna(wrn28["gpu_hours"]) and "wrn-28-10" in wrn28["note"]
    total = row(cifar10_plan, "total")
    body = cifar10_plan[cifar10_plan["rule"] != "total"]
    assert total["gpu_hours"] == pytest.approx(body["gpu_hours"].sum())
    assert total["jobs"] == body["jobs"].sum()
    assert "sample_shard (stylegan)" in total["note"]


def test_a_download_true_source_is_fetched_by_a_row_without_a_rate(shipped_config, tmp_path):
    config = copy.deepcopy(shipped_config)
    config["datasets"]["cifar10"]["source"]["download"] = True
    fetch = row(planned(config, "cifar10", tmp_path), "fetch_source")
    assert fetch["jobs"] == 1 and pd.isna(fetch["gpu_hours"]) and pd.isna(fetch["cpu_hours"])
    assert fetch["note"] == "no measured rate: no benchmark covers this rule"


def test_cifar10_quick_plans_within_eight_gpu_hours_on_one_h200(shipped_config, tmp_path):
    table = planned(shipped_config, "cifar10-quick", tmp_path)
    assert row(table, "total")["gpu_hours"] <= 8.0
    for rule in ("sample_shard", "train_robust", "train_scorer", "score_shard", "train_labeler", "evaluate"):
        assert table.loc[table["rule"] == rule, "gpu_hours"].notna().all(), rule  # every heavy stage is rated


def test_the_device_is_a_gpu_results_folder(tmp_path):
    for name, date, kind in (("old-gpu", "2026-01-01T00:00:00+00:00", "cuda"),
                             ("new-gpu", "2026-06-01T00:00:00+00:00", "cuda"),
                             ("newest-cpu", "2026-09-01T00:00:00+00:00", "cpu")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "sampling.json").write_text(json.dumps({"environment": {"date": date, "device_type": kind}}))
    assert plan.device_folder(None, tmp_path).name == "new-gpu"
    assert plan.device_folder("old-gpu", tmp_path).name == "old-gpu"
    with pytest.raises(ConfigError, match=r"plan\.device: 'newest-cpu' is not a folder of GPU results"):
        plan.device_folder("newest-cpu", tmp_path)


@pytest.mark.integration
def test_plan_target_runs_and_reruns_when_the_config_changes(tmp_path):
    (tmp_path / "tiny.yaml").write_text("{}\n")
    dry = run_snakemake(tmp_path, "-n", "results/cifar10/plan.csv")
    assert dry.returncode == 0 and "plan_dataset" in dry.stdout, dry.stderr[-2000:]
    result = run_snakemake(tmp_path, "--cores", "1", "results/cifar10/plan.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results/cifar10/plan.csv")
    assert list(table.columns) == plan.PLAN_COLUMNS and table["rule"].iloc[-1] == "total"
    # on the finished folder: nothing to do, until a value the plan depends on changes
    assert "Nothing to be done" in run_snakemake(tmp_path, "-n", "results/cifar10/plan.csv").stdout
    (tmp_path / "tiny.yaml").write_text("datasets: {cifar10: {generators: {ddpm: {steps: 500}}}}\n")
    rerun = run_snakemake(tmp_path, "-n", "results/cifar10/plan.csv")
    assert rerun.returncode == 0 and "plan_dataset" in rerun.stdout, rerun.stderr[-2000:]


def test_an_imported_set_not_on_disk_is_counted_from_its_n_images(shipped_config, tmp_path):
    """The Wang et al. presets can be planned before their 20M images are copied in."""
    config = copy.deepcopy(shipped_config)
    validate(config, str(SCHEMA_FILE))  # the defaults, as the Snakefile fills them in
    facts = plan.dataset_facts(config, "cifar10-wang2023")
    assert plan.imported_sets(config, "cifar10-wang2023") == []  # no input: the plan job can run
    assert facts.generator_images["edm-20m"] == 20_000_000
    table = planned(config, "cifar10-wang2023", tmp_path)
    imported = row(table, "sample_shard", "edm-20m")
    assert imported["work"] == 20_000_000 and "counted from n_images" in imported["note"]


def test_an_imported_set_without_n_images_is_an_input_of_its_plan_and_named_when_missing(shipped_config):
    config = copy.deepcopy(shipped_config)
    del config["datasets"]["cifar10-wang2023"]["generators"]["edm-20m"]["n_images"]
    parts = ["data/cifar10/edm/20m_part1.npz", "data/cifar10/edm/20m_part2.npz"]
    assert plan.imported_sets(config, "cifar10-wang2023") == parts  # Snakemake: missing input, before the job
    with pytest.raises(ArtifactError, match=r"datasets\.cifar10-wang2023\.generators\.edm-20m\.path: .*20m_part1"):
        plan.dataset_facts(config, "cifar10-wang2023")


@pytest.mark.parametrize("n_images, counted", [(None, 7), (20_000_000, 7), (5, 5)])
def test_an_imported_set_on_disk_is_counted_from_its_files_up_to_n_images(shipped_config, tmp_path, n_images, counted):
    config = copy.deepcopy(shipped_config)
    part = tmp_path / "part.npz"
    np.savez(part, image=np.zeros((7, 32, 32, 3), np.uint8), label=np.zeros(7, np.int64))
    gen = config["datasets"]["cifar10-wang2023"]["generators"]["edm-20m"]
    gen["path"], gen["n_images"] = [str(part)], n_images
    if n_images is None:
        del gen["n_images"]
    assert plan.imported_sets(config, "cifar10-wang2023") == [str(part)]
    assert plan.dataset_facts(config, "cifar10-wang2023").generator_images["edm-20m"] == counted
