"""The lines of src/port that only a GPU runs: a coverage run (pytest-cov) of the tests that take
the device paths on the CPU, then every line of a device-decided branch that they did not reach.

    python bench/gpu_only_lines.py                      # the device tests; Markdown, as in docs/performance.md
    python bench/gpu_only_lines.py tests/test_x.py ...  # other tests

The device tests: the CUDA fast path under CPU bf16 and torch.compile (tests/test_fast_path.py), the
pinned-memory stream, the GPU claims with a fake device count, two-process gloo DDP, the CUDA
device name in provenance (about a minute on 2 cores). A device-decided branch is either side of
an `if` whose test names the device (`CUDA_MARKERS`), or the rest of a block after such an `if`
that leaves it: the CPU runs one side, so once the tests reach every decision, the lines left are
those only a GPU runs. A one-line alternative (`a if cuda else b`) is listed apart: line coverage counts
its line run on the CPU, so it cannot say whether the CUDA side ever was.

Needs pytest-cov, which the test extra leaves out (no test uses it): `pip install pytest-cov`.
The ranks port.distributed starts are measured too, through coverage's `patch = subprocess`.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "port"
DEVICE_TESTS = [
    "tests/test_fast_path.py",
    "tests/test_loaders.py::test_pinned_stream_gives_the_unpinned_batches_each_in_its_own_buffer",
    "tests/test_devices.py",
    "tests/test_distributed.py",
    "tests/test_training.py::test_two_processes_train_the_single_process_model",
    "tests/test_training.py::test_stability_training_resumed_by_two_processes",
    "tests/test_artifacts.py::test_provenance_records_the_device_and_the_determinism_settings",
    "tests/test_bench.py::test_compute_uses_bf16_only_on_cuda",
]
# What a condition names when it decides on the device: CUDA itself, its collective backend, the
# fast-path switch of port.compute, page-locked memory, the bf16 decision.
CUDA_MARKERS = re.compile(r"\bcuda\b|\bnccl\b|fast_path|pin_memory|\.bf16\(")
LEAVES = (ast.Return, ast.Raise, ast.Continue, ast.Break)


def cuda_branches(source: str) -> tuple[set[int], dict[int, int]]:
    """The lines of a module on either side of a device decision, and its one-line CUDA
    alternatives: for each, its line and the first line of its statement (the line coverage counts)."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    branches, alternatives = set(), {}

    def lines(statements) -> set[int]:
        return {n for s in statements for n in range(s.lineno, s.end_lineno + 1)}

    for node in ast.walk(tree):
        if isinstance(node, ast.IfExp) and CUDA_MARKERS.search(ast.unparse(node.test)):
            statement = node
            while not isinstance(statement, ast.stmt):
                statement = parents[statement]
            alternatives[node.lineno] = statement.lineno
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            for at, statement in enumerate(block):
                if isinstance(statement, ast.If) and CUDA_MARKERS.search(ast.unparse(statement.test)):
                    branches |= lines(statement.body) | lines(statement.orelse)
                    if not statement.orelse and isinstance(statement.body[-1], LEAVES):
                        branches |= lines(block[at + 1:])
    return branches, alternatives


def measure(tests: list[str], folder: Path):
    """Run `tests` under pytest-cov; the coverage of the package, ranks started by port.distributed included."""
    import coverage

    config = folder / "coveragerc"
    config.write_text(f"[run]\nsource = port\npatch = subprocess\ndata_file = {folder / 'coverage'}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={folder / 'tmp'}",
                    "--cov=port", f"--cov-config={config}", "--cov-report=", *tests], cwd=REPO, env=env, check=True)
    measured = coverage.Coverage(config_file=str(config))
    measured.load()
    return measured


def report(measured, tests: list[str]) -> str:
    """Markdown: the lines of device-decided branches the tests missed, then the one-line CUDA alternatives."""
    import torch

    missed, alternatives = [], []
    for path in sorted(PACKAGE.glob("*.py")):
        source = path.read_text()
        code = source.splitlines()
        branches, one_line = cuda_branches(source)
        _, _, _, missing, _ = measured.analysis2(str(path))
        name = path.relative_to(REPO)
        missed += [f"| `{name}:{n}` | `{code[n - 1].strip()}` |" for n in sorted(branches & set(missing))]
        alternatives += [f"| `{name}:{n}` | `{code[n - 1].strip()}` | {'no' if first in missing else 'yes'} |"
                         for n, first in sorted(one_line.items())]
    header = "| line | code |\n|---|---|"
    return "\n".join([
        f"`python bench/gpu_only_lines.py` ({datetime.date.today()}, torch {torch.__version__}, "
        f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}), over: {', '.join(f'`{t}`' for t in tests)}.",
        "", f"Lines on either side of a device decision that no test reached ({len(missed)}):", "", header, *missed,
        "", f"One-line CUDA alternatives, whose CUDA side line coverage cannot see ({len(alternatives)}):",
        "", "| line | code | ran |\n|---|---|---|", *alternatives])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tests", nargs="*", default=DEVICE_TESTS, help="pytest node ids (default: the device tests)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpu-only-lines-") as folder:
        print(report(measure(args.tests, Path(folder)), args.tests))


if __name__ == "__main__":
    main()
