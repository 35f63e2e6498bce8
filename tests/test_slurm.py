"""The SLURM profile for real: a one-node SLURM cluster on 127.0.0.1 (tests/slurm_cluster.py,
conf files in tests/slurm/) runs the tiny digits DAG through `profiles/slurm` with its three site
values set (as a user does; SITE_VALUES), plus a test layer (tests/slurm/profile) that only
shortens the status polling. The shipped profile, placeholders left, submits nothing. Skipped where the SLURM
and munge binaries are missing; .ci/run installs them (Debian: slurm-wlm munge)."""

from __future__ import annotations

import copy
import csv
import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, TINY, declared_gpu_rules
from slurm_cluster import Cluster, missing_tools

SHIPPED = (REPO / "profiles/slurm/config.yaml").read_text()
# The profile's three site values, as the walkthrough (docs/cifar10-cluster.md) has a user set them.
SITE_VALUES = {"SET_ME_account": "port", "SET_ME_cpu_partition": "cpu", "SET_ME_gpu_partition": "gpu"}
SITE_PROFILE = SHIPPED
for placeholder, value in SITE_VALUES.items():
    SITE_PROFILE = SITE_PROFILE.replace(placeholder, value)
PROFILE = yaml.safe_load(SITE_PROFILE)
TEST_LAYER = REPO / "tests/slurm/profile"
TARGET = "results/digits/port_linf.csv"
# The tiny DAG behind port_linf.csv with random selection only (adaptive selection would add the
# discriminator and scoring chain: more of the same, at ~20 s of SLURM polling per job wave).
SELECTION = {"methods": ["random"]}
EXPECTED_JOBS = {"prepare_data": 1, "train_ddpm": 1, "sample_shard": 2, "merge_shards": 1, "train_labeler": 2,
                 "pseudo_label": 2, "merge_labels": 1, "filter_synthetic": 1, "audit_synthetic": 1,
                 "select_synthetic": 1, "train_robust": 2, "evaluate": 2, "summarize": 1}
TIMINGS = {"train_seconds", "eval_seconds"}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(missing_tools()), reason=f"SLURM/munge not installed (missing: {missing_tools()}); "
                       "`apt-get install slurm-wlm munge`, as .ci/run does"),
    pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                       reason="snakemake-executor-plugin-slurm is not installed"),
]


def partitions() -> list[str]:
    """The partitions profiles/slurm submits to; the test cluster gets exactly these (CPU first)."""
    names = [PROFILE["default-resources"]["slurm_partition"]]
    for resources in PROFILE["set-resources"].values():
        if resources.get("slurm_partition") and resources["slurm_partition"] not in names:
            names.append(resources["slurm_partition"])
    return names


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("slurm"), partitions())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def snakemake_command(profile: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", "tiny.yaml",
            "--profile", str(profile), "--profile", str(TEST_LAYER), *args]


def tiny_workdir(workdir: Path) -> Path:
    config = copy.deepcopy(TINY)
    config["datasets"]["digits"]["selection"].update(SELECTION)
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
    return workdir


def submitted(cluster) -> list[str]:
    return cluster.run("squeue", "--states=all", "--noheader", "--format=%i").stdout.split()


def check_nothing_submitted_with_placeholders(cluster, workdir: Path) -> None:
    """The shipped profile (SET_ME_* left) stops the run before any sbatch, with one message naming each key."""
    before = submitted(cluster)
    result = subprocess.run(snakemake_command(REPO / "slurm", TARGET), cwd=workdir, env=cluster.env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "profiles/slurm/config.yaml" in line]
    assert len(errors) == 1, result.stderr[-3000:]
    for key in ("default-resources.slurm_account", "default-resources.slurm_partition",
                "set-resources.train_ddpm.slurm_partition"):
        assert key in errors[0]
    assert submitted(cluster) == before


def test_placeholders_stop_the_run_before_any_sbatch(cluster, tmp_path):
    check_nothing_submitted_with_placeholders(cluster, tiny_workdir(tmp_path))


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """`snakemake --profile <site>/slurm --profile tests/slurm/profile results/digits/port_linf.csv`,
    <site>/slurm being profiles/slurm with SITE_VALUES set."""
    workdir = tiny_workdir(tmp_path_factory.mktemp("digits_slurm"))
    profile = tmp_path_factory.mktemp("site") / "slurm"
    profile.mkdir()
    (profile / "config.yaml").write_text(SITE_PROFILE)
    command = snakemake_command(profile, TARGET)
    start = time.monotonic()
    result = subprocess.run(command, cwd=workdir, env=cluster.env, capture_output=True, text=True, timeout=1500)
    seconds = time.monotonic() - start
    assert result.returncode == 0, f"{result.stderr[-6000:]}\n{cluster.logs()}"
    print(f"SLURM run of {TARGET}: {seconds:.0f} s")
    return workdir, result.stdout + result.stderr


def test_jobs_went_through_sbatch_with_the_profiles_resources(cluster, slurm_run):
    workdir, _ = slurm_run
    jobs = cluster.run("squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%P").stdout.split()
    states = {line.split("|")[0]: line.split("|")[1:] for line in jobs}
    assert len(states) == sum(EXPECTED_JOBS.values()), jobs
    assert {state for _, state, _ in states.values()} == {"COMPLETED"}, jobs
    # one kept SLURM log per job: logs/slurm/rule_<rule>/<wildcards>/<jobid>.log
    logs = list((workdir / "logs/slurm").glob("rule_*/**/*.log"))
    per_rule = {}
    for path in logs:
        rule = path.relative_to(workdir / "logs/slurm").parts[0].removeprefix("rule_")
        per_rule[rule] = per_rule.get(rule, 0) + 1
        assert path.stem in states, f"{path} is not a job of this cluster"
    assert per_rule == EXPECTED_JOBS
    for job_id, (_, _, partition) in states.items():
        detail = cluster.run("scontrol", "show", "job", job_id).stdout
        rule = re.search(r"StdOut=\S*/logs/slurm/rule_([^/]+)/", detail).group(1)
        wanted = {**PROFILE["default-resources"], **PROFILE["set-resources"].get(rule, {})}
        assert partition == wanted["slurm_partition"], (rule, detail)
        assert f"account={wanted['slurm_account'].lower()}" in detail.lower(), detail
        mem_mb = eval(str(wanted["mem_mb"]), {"attempt": 1})  # profile values may be expressions
        value, unit = re.search(r"MinMemoryNode=([\d.]+)([MGT])", detail).groups()  # 64000M shows as 62.50G
        assert float(value) * 1024 ** "MGT".index(unit) == mem_mb, (rule, detail)
        gpus = wanted.get("gpu", declared_gpu_rules().get(rule, 0))
        assert (f"TresPerJob=gres:gpu:{gpus}" in detail) == bool(gpus), (rule, detail)
        if gpus:  # cpus_per_gpu reached sbatch (not the rule's threads)
            assert f"CpusPerTres=gres:gpu:{wanted['cpus_per_gpu']}" in detail, (rule, detail)


def test_placeholders_stop_a_rerun_in_a_finished_folder(cluster, slurm_run):
    workdir, _ = slurm_run
    (workdir / "tiny.yaml").write_text((workdir / "tiny.yaml").read_text().replace("epochs: 2", "epochs: 3"))
    try:  # a config edit gives the finished folder jobs to submit; the placeholders still stop it first
        check_nothing_submitted_with_placeholders(cluster, workdir)
    finally:
        tiny_workdir(workdir)


def test_gpu_jobs_use_the_gpu_slurm_gave_them(slurm_run):
    workdir, _ = slurm_run
    gpu_rules = set(declared_gpu_rules()) & set(EXPECTED_JOBS)
    for rule in EXPECTED_JOBS:
        for log in (workdir / "logs" / rule).rglob("*.log"):
            line = re.search(r"CUDA_VISIBLE_DEVICES=(\S*) \((.*)\)", log.read_text())
            assert line, log
            if rule in gpu_rules:  # SLURM's choice, not a port.devices claim
                assert line.groups() == (line.group(1), "not claimed: set by a scheduler, or no GPU asked")
                assert line.group(1) in {"0", "1"}, log
            else:
                assert line.group(1) == "<unset>", log


def rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(handle)]


def test_outputs_equal_the_local_run(slurm_run, tiny_run):
    """CPU training is deterministic with the fixed seeds: the SLURM run reproduces the local one."""
    workdir, _ = slurm_run
    assert rows(workdir / TARGET) == [r for r in rows(tiny_run / TARGET) if r["selection"] in ("none", "random")]
    for slot in ("lanet", "splitnet"):
        name = f"results/digits/labelers/{slot}/metrics.csv"
        assert rows(workdir / name) == rows(tiny_run / name)
    name = "results/digits/synthetic/ddpm/filter_counts.csv"
    assert rows(workdir / name) == rows(tiny_run / name)
    for method in ("baseline", "port-random"):
        name = f"results/digits/runs/linf/{method}/small_cnn/seed0/history.csv"
        slurm, local = pd.read_csv(workdir / name), pd.read_csv(tiny_run / name)
        pd.testing.assert_frame_equal(slurm.drop(columns="epoch_seconds"), local.drop(columns="epoch_seconds"))
