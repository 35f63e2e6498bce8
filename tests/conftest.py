import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from cifar_format import class_coloured_images, write_cifar10


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests' tiny models run fastest on one thread, and two threads crawl on a busy
    2-core machine. (The integration test's Snakemake jobs set their own thread counts.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cheap_autoattack(monkeypatch):
    """AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square, in that order) with one
    iteration, one target class and two Square queries: every attack's code path runs on every
    surviving image with a few dozen forward passes instead of thousands."""
    import pyautoattack

    class CheapAutoAttack(pyautoattack.AutoAttack):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for apgd in (self.apgd, self.apgd_targeted):
                apgd.n_iter, apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = 1, 1, 1, 1
            self.apgd_targeted.n_target_classes = self.fab.n_target_classes = 1
            self.fab.n_iter, self.square.n_queries = 1, 2

    monkeypatch.setattr(pyautoattack, "AutoAttack", CheapAutoAttack)


REPO = Path(__file__).resolve().parents[1]

TINY = {
    "default_datasets": ["digits"],
    "datasets": {"digits": {
        "diffusion_models": {"ddpm": {"block_out_channels": [16, 32], "steps": 30, "batch_size": 32,
                                      "warmup": 5, "train_timesteps": 10}},
        "gan_models": {"gan": {"steps": 40, "width": 16}},
        # the full 10-step chain: 10 solver steps of a 30-step-trained tiny DDPM give images no labeler keeps
        "generators": {"ddpm": {"scheduler": "ddpm", "steps": 10, "n_images": 240, "n_shards": 2, "batch_size": 64},
                       "ddpm-4steps": {"steps": 2, "n_images": 240, "batch_size": 120},
                       "gan": {"n_images": 240, "n_shards": 2, "batch_size": 100}},
        "labelers": {"lanet": {"epochs": 2}, "splitnet": {"epochs": 2}},
        "pseudo_label": {"n_shards": 2},  # the shipped digits config labels in one shard: cover the merge
        "filter": {"threshold": 0.5},
        "selection": {"k": 40},
        # two discrimination seeds: ARC per seed and its mean over seeds (the shipped digits config has one)
        "discrimination": {"eps": [0.0, 0.05], "seeds": [0, 1], "epochs": 1, "eps_warmup_epochs": 0.5, "steps": 2,
                           "n_heldout": 60, "val_fraction": 0.05},  # 240 images: 60 held out, 67 validate
        "scores": {"discriminator_eps": 0.05, "eps": 0.01, "steps": 2, "n_shards": 2},
        "score_groups": {"enabled": True, "n_groups": 2},  # a study on digits; the tiny DAG covers it
        # the shipped ranking's three unconditional-path generators (ddpm-cond's path is unit-tested)
        "generator_ranking": {"generators": ["ddpm", "ddpm-4steps", "gan"], "n_train": 48, "epochs": 1,
                              "n_metric_images": 100},
        "training": {"epochs": 2, "batch_size": 32},
        "evaluation": {"n_test": 30, "pgd_steps": 3},
        "smoothing": {"epochs": 2, "radii": [0.0, 0.25, 0.5],
                      "certify": {"n0": 10, "n": 200, "batch_size": 200, "skip": 30}},
        # one cut (72 training images: a batch of the shipped labelers' 64) and `all`; not a default target
        "studies": {"data_scarcity": {"sizes": [80], "steps": 4, "min_steps": 20, "seeds": [0, 1]}},
    }},
}


# The same stages on RGB 32x32 images in the real CIFAR-10 on-disk format (`cifar-10-batches-py`,
# read by torchvision): the digits tiny config on top of config.yaml's digits entry, with CIFAR's
# threat sizes, cheaper PGD (32x32x3 costs 48x an 8x8 digit) and a few AutoAttack images.
RGB_DATASET = "cifar10-tiny"
TINY_RGB = {
    "diffusion_models": {"ddpm": {"block_out_channels": [16, 32], "steps": 10, "batch_size": 8}},
    "labelers": {"lanet": {"batch_size": 16}, "splitnet": {"batch_size": 16}},  # enough steps to learn colours
    # Keep every image: two tiny labelers rarely agree on the noise that 10 DDPM steps learn, and
    # transfer_set needs 48 filtered images per generator. The rule reads probabilities only (no
    # images), so digits and the unit tests cover it fully.
    "filter": {"threshold": 0.0},
    "threats": {"linf": {"norm": "linf", "eps": 8 / 255, "step_size": 4 / 255, "steps": 2},
                "l2": {"norm": "l2", "eps": 0.5, "step_size": 0.25, "steps": 2}},
    "discrimination": {"eps": [0.0, 0.05], "seeds": [0], "epochs": 1, "steps": 1, "eval_steps": 2, "n_heldout": 60},
    # the standard version's four attacks on RGB (the digits default runs two of them)
    "evaluation": {"n_test": 4, "pgd_steps": 3, "autoattack_attacks": ["apgd-ce", "apgd-t", "fab-t", "square"]},
    "smoothing": {"epochs": 1, "radii": [0.0, 0.25, 0.5],
                  "certify": {"n0": 10, "n": 100, "batch_size": 100, "skip": 25}},
}


def merged(base: dict, override: dict) -> dict:
    """`override` on top of `base`, key by key (as Snakemake merges a --configfile into the config)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def rgb_config(cifar_root: Path, md5: dict) -> dict:
    digits = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["datasets"]["digits"]
    dataset = merged(merged(digits, TINY["datasets"]["digits"]), TINY_RGB)
    dataset["source"] = {"kind": "cifar10", "root": str(cifar_root), "download": False, "md5": md5}
    return {"default_datasets": [RGB_DATASET], "datasets": {RGB_DATASET: dataset}}


def run_snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(workdir / "tiny.yaml"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=1200)


def run_tiny_dag(workdir: Path, config: dict) -> Path:
    """Every default target of `config` (on top of config.yaml), built on 2 cores in `workdir`."""
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


# The fixtures that build a whole workflow run (`dag` in test_workflow.py takes one by name), and the
# files whose tests use them: under xdist (`-n 2`, pyproject.toml) those files run on one worker,
# which builds each run once, while the other tests are shared out one by one.
FINISHED_RUNS = {"tiny_run", "rgb_run", "slurm_run", "dag"}
FINISHED_RUN_FILES = {"test_profiles.py", "test_rerun.py", "test_scarcity.py", "test_slurm.py", "test_workflow.py"}


def pytest_collection_modifyitems(items):
    stray = {item.path.name for item in items if FINISHED_RUNS & set(item.fixturenames)} - FINISHED_RUN_FILES
    if stray:
        raise pytest.UsageError(f"{', '.join(sorted(stray))} use a finished workflow run: add them to "
                                f"FINISHED_RUN_FILES in tests/conftest.py (else xdist builds the run twice)")


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class FinishedRunsOnOneWorker(LoadScopeScheduling):
        """xdist's scope scheduling (the largest scope first) with one scope for FINISHED_RUN_FILES
        and one per test elsewhere."""

        def _split_scope(self, nodeid):
            return "finished runs" if Path(nodeid.split("::")[0]).name in FINISHED_RUN_FILES else nodeid

    return FinishedRunsOnOneWorker(config, log)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return run_tiny_dag(tmp_path_factory.mktemp("digits_run"), TINY)


@pytest.fixture(scope="session")
def rgb_run(tmp_path_factory):
    cifar_root = tmp_path_factory.mktemp("cifar10_files")
    _, _, md5 = write_cifar10(cifar_root, per_batch=40, n_test=100, draw_images=class_coloured_images)
    return run_tiny_dag(tmp_path_factory.mktemp("rgb_run"), rgb_config(cifar_root, md5))


def declared_gpu_rules() -> dict[str, int]:
    """{rule: N} for every rule in rules/*.smk that declares `resources: gpu=N` itself or copies a
    rule that does (`use rule A as B`)."""
    found = {}
    for path in sorted((REPO / "rules").glob("*.smk")):
        for rule, body in re.findall(r"^rule (\w+):\n((?:(?:    .*)?\n)*)", path.read_text(), flags=re.M):
            if resources := re.search(r"^    resources:\n(?:        .*\n)*?        gpu=(\d+)", body, flags=re.M):
                found[rule] = int(resources.group(1))
    for path in sorted((REPO / "rules").glob("*.smk")):  # `use rule A as B with:` inherits A's resources
        for parent, alias in re.findall(r"^use rule (\w+) as (\w+)", path.read_text(), flags=re.M):
            if parent in found:
                found[alias] = found[parent]
    return found


@pytest.fixture(scope="session")
def shipped_config():
    """config/config.yaml as shipped (tests copy it before editing)."""
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())
