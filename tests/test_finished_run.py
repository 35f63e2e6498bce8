"""Issue 22: bad files and settings are refused on a results folder that already holds a finished
run (Snakemake discards an input function's error when the job's outputs exist), and the refusal
leaves every earlier output byte for byte as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from port.errors import ArtifactError
from port.inputs import check_finished_datasets, requested_datasets
from port.settings.schema import SCHEMA as SCHEMA_FILE
from test_bad_input import _snapshot
from test_trusted_inputs import REPO, _npz_dataset, _rgb32_model, _snakemake

TARGET = "results/mine/synthetic/imp/labels.h5"  # downstream of the source, the imported set and both labelers
BASELINE = "results/mine/runs/linf/baseline/small_cnn/seed0/model.pt"  # robust training on the real set alone


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny npz dataset labelled to TARGET, and a baseline robust model: every config-named file
    and every trainer of the real set has a finished consumer."""
    workdir = _npz_dataset(tmp_path_factory.mktemp("finished"), epochs=1)
    _edit_config(workdir, lambda ds, c: ds["labelers"]["splitnet"].update(epochs=1))
    result = _snakemake(workdir, TARGET, BASELINE, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _edit_config(workdir: Path, change) -> None:
    config = yaml.safe_load((workdir / "mine.yaml").read_text())
    change(config["datasets"]["mine"], config)
    (workdir / "mine.yaml").write_text(yaml.safe_dump(config))


def _wrong_geometry_npz(workdir: Path, name: str) -> str:
    np.savez(workdir / name, image=np.zeros((24, 4, 4, 1), np.uint8), label=np.arange(24) % 4)
    return name


def generator_path(workdir):
    path = _wrong_geometry_npz(workdir, "wrong.npz")
    _edit_config(workdir, lambda ds, c: ds["generators"]["imp"].update(path=path))
    return "datasets.mine.generators.imp.path: wrong.npz: images are 4x4x1 (HxWxC), but train.npz holds 8x8x1"


def labeler_checkpoint(workdir):
    _rgb32_model(workdir / "rgb32.pt")
    _edit_config(workdir, lambda ds, c: ds["labelers"]["lanet"].update(checkpoint="rgb32.pt"))
    return "datasets.mine.labelers.lanet.checkpoint: rgb32.pt: checkpoint is for 32x32x3 (HxWxC) images"


def source_test_set(workdir):
    path = _wrong_geometry_npz(workdir, "test4.npz")
    _edit_config(workdir, lambda ds, c: ds["source"].update(test=path))
    return "datasets.mine.source: test4.npz: images are 4x4x1 (HxWxC), but train.npz holds 8x8x1"


def class_only_in_test(workdir):
    """Found inside prepare_data before: the job deleted the previous train.h5 and test.h5 first."""
    np.savez(workdir / "test5.npz", image=np.zeros((16, 8, 8, 1), np.uint8), label=np.arange(16) % 5)
    _edit_config(workdir, lambda ds, c: ds["source"].update(test="test5.npz"))
    return "datasets.mine.source: test5.npz: class(es) [4] appear in test but never in train.npz"


def batch_larger_than_the_training_set(workdir):
    """Found inside train_labeler before: the job deleted the previous model, history and metrics."""
    _edit_config(workdir, lambda ds, c: ds["labelers"]["splitnet"].update(batch_size=128))
    return ("datasets.mine.labelers.splitnet.batch_size=128: train.npz holds 48 images, 43 after the "
            "val_fraction=0.1 hold-out: fewer than one batch")


def robust_batch_larger_than_the_training_set(workdir):
    """Found inside train_robust before: the job deleted the previous model and history first."""
    _edit_config(workdir, lambda ds, c: ds["training"].update(batch_size=64))
    return ("datasets.mine.training.batch_size=64: train.npz holds 48 images, 43 after the val_fraction=0.1 "
            "hold-out: fewer than one batch")


def generator_path_with_another_edit(workdir):
    """The issue's second symptom: with a rerun due anyway (a labeler edit), the wrong file was ignored."""
    message = generator_path(workdir)
    _edit_config(workdir, lambda ds, c: ds["labelers"]["splitnet"].update(epochs=2))
    return message


def default_target(workdir):
    """No target on the command line: the default rule `all` builds the default datasets."""
    message = source_test_set(workdir)
    _edit_config(workdir, lambda ds, c: c.update(default_datasets=["mine"]))
    return message


# one case per config-named file (the imported set's path, a labeler checkpoint, the test set),
# and problems a job found only after Snakemake had deleted the earlier outputs
CASES = [generator_path_with_another_edit, labeler_checkpoint, default_target, class_only_in_test,
         batch_larger_than_the_training_set, robust_batch_larger_than_the_training_set]


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_named_file_is_refused_on_a_finished_run(finished, tmp_path, case):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)  # keeps mtimes: the copy is as finished as the original
    expected = case(workdir)
    before = {k: v for k, v in _snapshot(workdir).items() if k.startswith("results/")}
    targets = [] if case is default_target else [TARGET, BASELINE]
    result = _snakemake(workdir, *targets, "--cores", "1")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert expected in output, output[-3000:]
    assert {k: v for k, v in _snapshot(workdir).items() if k.startswith("results/")} == before


RULE_INPUTS = {"all": ["results/digits/port_linf.csv"], "studies": ["results/mine/studies/gamma.csv"]}
CONFIG = {"datasets": {"digits": {}, "mine": {}}}


@pytest.mark.parametrize("argv, datasets", [
    ([], {"digits"}),  # the default target
    (["--cores", "2"], {"digits"}),
    (["results/mine/data/train.h5", "--cores", "1"], {"mine"}),
    (["./results/mine/data/train.h5", "-n"], {"mine"}),
    (["studies", "results/digits/data/test.h5"], {"mine", "digits"}),  # a target rule's inputs
    (["--cores", "1", "--", "results/mine/x.h5"], {"mine"}),  # targets after `--`
    (["results/other/x.h5", "report.html"], set()),  # a dataset not in config, a file outside results/
    (["--unlock"], set()),  # runs no job
    (["results/mine/plan.csv", "./results/digits/plan.csv"], set()),  # a plan job reads the files itself
    (["results/mine/plan.csv", "results/digits/data/test.h5"], {"digits"}),
])
def test_requested_datasets(argv, datasets):
    assert requested_datasets(CONFIG, argv, RULE_INPUTS) == datasets


def test_requested_datasets_outside_a_command_line_is_every_dataset():
    assert requested_datasets(CONFIG, ["--cores", "many"], RULE_INPUTS) == {"digits", "mine"}


def test_only_requested_datasets_with_results_are_checked(tmp_path, monkeypatch):
    """A dataset without results cannot hide an error (its jobs all run), so it is not checked
    when the workflow starts; one with results is, and its bad file is named."""
    monkeypatch.chdir(tmp_path)
    np.savez("train.npz", image=np.zeros((8, 8, 8, 1), np.uint8), label=np.arange(8) % 4)
    source = {"kind": "npz", "train": "train.npz", "test": _wrong_geometry_npz(tmp_path, "test4.npz")}
    config = {"datasets": {"mine": {"source": source, "generators": {}, "labelers": {}}}}
    argv = ["results/mine/data/train.h5"]
    assert check_finished_datasets(config, argv, {}) == []
    Path("results/mine").mkdir(parents=True)
    assert check_finished_datasets(config, ["results/other/x.h5"], {}) == []
    with pytest.raises(ArtifactError, match="datasets.mine.source: test4.npz: images are 4x4x1"):
        check_finished_datasets(config, argv, {})


@pytest.mark.integration
def test_a_sampler_setting_of_an_imported_set_reruns_nothing(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    _edit_config(workdir, lambda ds, c: ds["generators"]["imp"].update(batch_size=7, steps=3))
    plan = _snakemake(workdir, TARGET, "-n")
    assert plan.returncode == 0 and "Nothing to be done" in plan.stdout + plan.stderr, plan.stdout[-3000:]


def test_checking_a_finished_dataset_that_names_no_file_imports_no_torch(tmp_path):
    """The digits default names no file: its start-time check loads neither torch nor h5py
    (pandas comes with snakemake.cli, which the snakemake command has loaded already)."""
    import subprocess
    import sys

    (tmp_path / "results" / "digits").mkdir(parents=True)
    code = ("import sys, yaml; from snakemake.utils import validate; import port.inputs as inputs; "
            f"config = yaml.safe_load(open({str(REPO / 'config' / 'config.yaml')!r})); "
            f"validate(config, {str(SCHEMA_FILE)!r}); "
            "print(inputs.check_finished_datasets(config, [], {'all': ['results/digits/port_linf.csv']}), "
            "sorted(m for m in ('torch', 'h5py') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert result.stdout.strip() == "['digits'] []"
