"""The execution profiles: `snakemake --profile slurm ...` works literally from the repository
root, the rules state their own GPU need, and profiles/slurm places every GPU rule on the GPU partition."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, declared_gpu_rules

SLURM = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
LOCAL = yaml.safe_load((REPO / "profiles/local/config.yaml").read_text())

GPU_RULES = set(declared_gpu_rules())


def rule_resources(output: str) -> dict[str, dict[str, str]]:
    """{rule: resources of its last job} from a dry run's job listing."""
    found = {}
    for rule, resources in re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", output, flags=re.M):
        found[rule] = dict(item.split("=", 1) for item in resources.split(", "))
    return found


@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm is not installed")
def test_the_literal_slurm_command_plans_with_the_profile(tmp_path):
    result = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "slurm", "-d", str(tmp_path), "-n",
                             "results/cifar10/port_linf.csv"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert re.search(r"^sample_shard\s+300$", output, flags=re.M)  # the CIFAR-10 plan: 15M images in 300 shards
    resources = rule_resources(output)
    gpu_block = SLURM["set-resources"]["train_ddpm"]
    for rule in ("sample_shard", "train_labeler", "pseudo_label", "train_robust", "evaluate"):
        assert resources[rule]["gpu"] == "1", rule
        assert resources[rule]["slurm_partition"] == gpu_block["slurm_partition"], rule
        assert resources[rule]["slurm_account"] == SLURM["default-resources"]["slurm_account"], rule
        assert "cpus_per_task" not in resources[rule], rule
    assert resources["train_robust"]["cpus_per_gpu"] == "16" and resources["evaluate"]["cpus_per_gpu"] == "8"
    assert resources["train_robust"]["runtime"] == str(2 * 24 * 60)
    assert "gpu" not in resources["summarize"]
    assert resources["summarize"]["slurm_partition"] == SLURM["default-resources"]["slurm_partition"]


def test_profiles_cover_the_gpu_rules_of_the_workflow():
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--list-rules"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rules = set(result.stdout.split())
    # the rules that train or run networks; each states gpu=1 itself
    assert {"train_robust", "evaluate", "certify", "sample_shard", "score_shard"} <= GPU_RULES <= rules
    assert set(declared_gpu_rules().values()) == {1}
    assert set(SLURM["set-resources"]) <= rules, set(SLURM["set-resources"]) - rules  # no typos
    gpu_partition = SLURM["set-resources"]["train_ddpm"]["slurm_partition"]
    assert {r for r, res in SLURM["set-resources"].items() if res.get("slurm_partition") == gpu_partition} == GPU_RULES
    assert not any("gpu" in res for res in SLURM["set-resources"].values())  # the rules' own fact
    assert "set-resources" not in LOCAL  # only site facts: the GPU cap
    for profile in (SLURM, LOCAL):
        assert profile["resources"]["gpu"] >= 1
    assert SLURM["executor"] == "slurm" and "executor" not in LOCAL
    assert "cpus_per_task" not in SLURM["default-resources"]  # it would override cpus_per_gpu everywhere
    assert SLURM["slurm-status-command"] == "squeue" and not SLURM.get("slurm-array-jobs")
    for rule in GPU_RULES:
        assert {"cpus_per_gpu", "mem_mb", "runtime", "slurm_partition"} <= set(SLURM["set-resources"][rule])
    # `--profile slurm` finds ./slurm only; a profiles/default would be layered over every profile
    assert (REPO / "slurm").resolve() == (REPO / "profiles/slurm").resolve()
    assert not (REPO / "profiles/default").exists()


@pytest.mark.integration
def test_local_profile_jobs_claim_their_own_gpu(tiny_run, tmp_path):
    """`--profile profiles/local` on a pretend 2-GPU machine: rerun the two certify jobs (a copy of
    the tiny run; seconds) and each one claims a GPU for itself through port.devices."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, ignore=shutil.ignore_patterns(".snakemake"))
    env = {**os.environ, "PORT_GPU_COUNT": "2", "PORT_GPU_LOCK_DIR": str(tmp_path / "locks")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                             "--configfile", str(workdir / "tiny.yaml"), "--profile", str(REPO / "profiles/local"),
                             "--cores", "2", "-R", "certify", "--until", "certify"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = sorted((workdir / "logs/certify").rglob("*.log"))
    assert len(logs) == 2
    for log in logs:
        last = re.findall(r"CUDA_VISIBLE_DEVICES=(\S*) \(([^)]*)\)", log.read_text())[-1]
        assert last[0] in {"0", "1"} and last[1] == "claimed by port.devices", (log, last)
