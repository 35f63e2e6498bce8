"""The training-side benchmarks (bench/pgd_training, certification, scoring, autoattack,
precision_digits, audit) run in their `--small` CPU setting, write complete JSON, and their fast paths
agree with the plain paths: on the CPU the project computes in fp32, so the step's weights, the
certification counts and the scores must equal the plain loop's. Also the `compute` block's
rules (bf16 only on CUDA)."""

from __future__ import annotations

import json
import runpy
import sys

import pytest
import torch

from port.errors import ArtifactError
from port.compute import Compute, channels_last

from conftest import REPO

BENCH = REPO / "bench"


def run_bench(name: str, out, *extra) -> dict:
    """Run `python bench/<name>.py --small --out OUT` in this process (no second torch import)."""
    argv, path, threads = sys.argv, list(sys.path), torch.get_num_threads()
    sys.argv = [str(BENCH / f"{name}.py"), "--small", "--device", "cpu", "--out", str(out), *extra]
    sys.path.insert(0, str(BENCH))
    try:
        runpy.run_path(str(BENCH / f"{name}.py"), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = argv, path
        torch.set_num_threads(threads)
    result = json.loads((out / f"{name}-small.json").read_text())
    assert result["benchmark"] == name and result["small"] is True
    assert {"device", "torch", "date", "device_type"} <= set(result["environment"])
    assert result["environment"]["device_type"] == "cpu"
    assert result["settings"] and result["results"]
    for row in result["results"]:
        assert {"what", "unit", "rate", "baseline_rate", "ratio"} <= set(row)
        assert row["rate"] > 0
    return result


def test_pgd_training_step_matches_the_plain_loop(tmp_path):
    result = run_bench("pgd_training", tmp_path)
    (row,) = result["results"]
    assert row["baseline_rate"] > 0 and row["ratio"] == pytest.approx(row["rate"] / row["baseline_rate"])
    agreement = row["agreement"]
    assert agreement["loss_abs_diff"] <= 1e-6
    assert agreement["param_max_abs_diff_after_one_step"] <= 1e-6
    assert result["settings"]["threat"]["steps"] == 10


def test_certification_counts_equal_the_plain_loop(tmp_path):
    result = run_bench("certification", tmp_path)
    agreement = result["results"][0]["agreement"]
    assert agreement["counts_equal"] and agreement["total_variation"] == 0.0
    assert len([c for c in agreement["counts_plain"] if c]) >= 2, "the noise should change some answers"
    assert sum(agreement["counts_fast"]) == result["settings"]["noise_per_call"]


def test_scores_equal_the_plain_loop(tmp_path):
    (row,) = run_bench("scoring", tmp_path)["results"]
    assert row["agreement"]["score_max_abs_diff"] <= 1e-6
    assert row["agreement"]["clean_max_abs_diff"] <= 1e-6
    assert row["agreement"]["mean_score_drop"] >= 0  # the attack can only lower P(synthetic)


def test_audit_search_finds_the_plain_loops_neighbours(tmp_path):
    rows = run_bench("audit", tmp_path)["results"]
    assert [row["space"] for row in rows] == ["linf", "rms", "lanet_cosine"]
    for row in rows:
        assert row["agreement"]["same_neighbour"] == 1.0, row["space"]
        assert row["agreement"]["distance_max_abs_diff"] <= 1e-5, row["space"]


def test_autoattack_benchmark(tmp_path):
    (row,) = run_bench("autoattack", tmp_path)["results"]
    assert 0.0 <= row["robust_accuracy"] <= 1.0
    assert row["baseline_rate"] is None


def test_bf16_training_on_the_cpu_is_fp32(tmp_path):
    """The CPU ignores precision: a bf16 run's accuracies are the fp32 run's exactly."""
    (row,) = run_bench("precision_digits", tmp_path)["results"]
    assert {r["precision"] for r in row["runs"]} == {"bf16", "fp32"}
    assert row["mean_diff_bf16_minus_fp32"] == {"clean_acc": 0.0, "pgd20_acc": 0.0}
    assert row["within_one_point"] is True


def test_compute_uses_bf16_only_on_cuda():
    assert Compute().bf16("cuda") and not Compute().bf16("cpu")
    assert not Compute("fp32").bf16("cuda")
    with Compute().autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ArtifactError, match="precision"):
        Compute("fp16")
    with pytest.raises(ArtifactError, match="unknown compute"):
        Compute.from_settings({"precison": "fp32"})
    assert Compute.from_settings(None) == Compute("bf16", False)
    assert channels_last(torch.zeros(2, 3, 4, 4)).is_contiguous(memory_format=torch.channels_last)


def test_gpu_only_lines_takes_either_side_of_a_device_decision():
    """bench/gpu_only_lines.py's reading of a module: both sides of an `if` on the device, the rest
    of a block such an `if` returns from, and a one-line alternative at its statement's first line
    (the line coverage counts); nothing else."""
    cuda_branches = runpy.run_path(str(BENCH / "gpu_only_lines.py"))["cuda_branches"]
    source = '''\
def place(device, x, compute):
    if device.type == "cuda":
        x = x.cuda()
    else:
        x = x + 1
    if not compute.bf16(device):
        return x
    y = x * 2
    return y


def gather(x, pin_memory):
    z = x + 1
    return stack(z,
                 x.pin() if pin_memory else x)
'''
    branches, alternatives = cuda_branches(source)
    assert branches == {3, 5, 7, 8, 9}
    assert alternatives == {15: 14}
