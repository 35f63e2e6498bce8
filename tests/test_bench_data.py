"""The data benchmarks (bench/sampling.py, bench/loader.py) run in their --small CPU setting and
write valid JSON; the fast sampler agrees with the plain diffusers loop on that case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_small(name: str, out: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--small", "--out", str(out), *extra], check=True, env=env,
                   capture_output=True, text=True)
    result = json.loads((out / f"{name}-small.json").read_text())
    assert result["benchmark"] == name and result["small"] is True
    assert {"device", "torch", "date"} <= set(result["environment"])
    return result


def check_compared(row: dict) -> None:
    assert row["rate"] > 0 and row["baseline_rate"] > 0
    assert row["ratio"] == pytest.approx(row["rate"] / row["baseline_rate"])


def test_sampling_small(tmp_path):
    result = run_small("sampling", tmp_path)
    rows = result["results"]
    compared_rows = [row for row in rows if "ratio" in row]
    for row in compared_rows:
        check_compared(row)
    names = " ".join(row["what"] for row in compared_rows)
    assert "DDPMPipeline" in names and all(s in names for s in ("ddim", "dpmsolver++", "unipc"))
    agreement = next(row for row in rows if "max" in row)
    assert agreement["max"] < 1e-4  # fp32 on the CPU: the same numbers as diffusers' own loop


def test_loader_small(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = run_small("loader", tmp_path, "--tmp", str(scratch))
    (row,) = result["results"]
    check_compared(row)
    assert row["peak_rss_bytes"] > 0 and row["baseline_peak_rss_bytes"] > 0
    assert result["settings"]["n_images"] == 50_000
    assert list(scratch.iterdir()) == []  # the temporary sets are deleted
