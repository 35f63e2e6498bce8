"""Shared plumbing for the benchmarks: one JSON result per run, timed with the device synchronised,
the project's fast path and its plain baseline measured in the same process, and their ratio.

Every benchmark is `python bench/<name>.py [--small] [--out DIR]`; `--small` is a CPU setting that
finishes in CI-sized time, the default is the full GPU setting. Results go to `bench/results/`
(or `--out`, or `$PORT_BENCH_OUT`) as `<name>[-small].json`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).parent / "results"


def parser(description: str, precision: bool = False) -> argparse.ArgumentParser:
    """The arguments every benchmark takes; `precision` adds the project's compute precision."""
    p = argparse.ArgumentParser(description=description)
    if precision:
        p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="the project's compute precision")
    p.add_argument("--small", action="store_true", help="CPU-sized setting (seconds), for CI and tests")
    p.add_argument("--out", default=os.environ.get("PORT_BENCH_OUT", str(RESULTS)),
                   help="folder for the JSON result (default bench/results, or $PORT_BENCH_OUT)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def parse(p: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the arguments; `--small` runs on one CPU thread: small kernels gain nothing from more,
    and on a shared CI machine spinning threads make them many times slower."""
    args = p.parse_args()
    if args.small:
        torch.set_num_threads(1)
    return args


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def rate(step: Callable[[], object], items_per_step: int, device, warmup: int = 1, repeats: int = 3,
         min_seconds: float = 0.0) -> float:
    """Items per second of `step`: best of `repeats` timed runs after `warmup` untimed ones.

    A timed run repeats the step until it lasted `min_seconds` (one step at least), so short GPU
    steps are not dominated by launch and timer overhead; the device is synchronised around it.
    """
    for _ in range(warmup):
        step()
    synchronize(device)
    best = 0.0
    for _ in range(repeats):
        start, steps = time.perf_counter(), 0
        while True:
            step()
            steps += 1
            synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = max(best, steps * items_per_step / elapsed)
    return best


def environment(device) -> dict:
    """Where and with what the numbers were measured."""
    device = torch.device(device)
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_result(name: str, args: argparse.Namespace, settings: dict, rows: list[dict]) -> Path:
    """Write `<name>[-small].json`; each row names what was measured, its rate, the baseline and the ratio."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}{'-small' if args.small else ''}.json"
    payload = {"benchmark": name, "small": args.small, "settings": settings,
               "environment": environment(args.device), "results": rows}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    print(json.dumps(payload, indent=2))
    return path


def compared(what: str, unit: str, fast: float, plain: float, **extra) -> dict:
    """One result row: the project's path against the plain baseline measured in the same run."""
    return {"what": what, "unit": unit, "rate": fast, "baseline_rate": plain,
            "ratio": fast / plain if plain else None, **extra}


def profile_summary(step: Callable[[], object], device, steps: int = 3, rows: int = 25) -> dict:
    """torch.profiler over `steps` calls of `step`: the top kernels by device time, the wall time,
    and the device's busy time (kernel time summed): what to read when a rate misses its target.
    busy/wall well below 1 means the host cannot launch kernels fast enough (launch-bound)."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    cuda = device.type == "cuda"
    step()
    synchronize(device)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        wall = time.perf_counter() - start
    averages = prof.key_averages()
    table = averages.table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=rows,
                           max_name_column_width=70)
    summary = {"steps": steps, "wall_seconds": wall, "table": table}
    if cuda:
        on_device = [e for e in averages if getattr(e, "self_device_time_total", 0) > 0]
        busy = sum(e.self_device_time_total for e in on_device) / 1e6
        summary.update(device_busy_seconds=busy, device_busy_fraction=busy / wall,
                       device_ops_per_step=sum(e.count for e in on_device) / steps)
    return summary
