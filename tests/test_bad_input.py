"""Bad input, table-driven: every case gets one clear error that names the file or config key
and says what is wrong, and leaves every file on disk exactly as it was (bytes and mtime, no
new or temporary files). A representative subset runs for real through Snakemake: the
workflow scripts turn these errors into a non-zero exit, and a bad config stops the run before
any job starts.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from port.artifacts import (load_torch, provenance, read_image_set, save_torch, verified_inputs, write_arrays,
                            write_images)
from port.errors import ArtifactError, ConfigError
from port.settings.checks import check_config
from port.data import prepare_dataset
from port.generators import merge_shards, sample_shard
from port.labeling import filter_images, prepare_labeler, pseudo_label
from port.logs import logged_job
from port.models import build_model, load_model, model_spec, save_model
from port.selection import select_images
from port.training import train
from port.settings.training import TrainSettings
from port.settings.schema import SCHEMA as SCHEMA_FILE

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(SCHEMA_FILE)
N_SYN = 40
TRAIN = {"arch": "small_cnn", "epochs": 1, "batch_size": 16}


def _images(n, shape=(8, 8, 1), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _real(path, images=None, labels=None, num_classes=4):
    images = _images(64) if images is None else images
    labels = np.arange(len(images)) % num_classes if labels is None else labels
    attrs = provenance("prepare_data", {}, 0, num_classes=num_classes, channel_mean=[0.5], channel_std=[0.25])
    with h5py.File(path, "w") as handle:  # raw, so that malformed sets can be written too
        handle.create_dataset("images", data=images)
        handle.create_dataset("labels", data=labels)
        for key, value in attrs.items():
            handle.attrs[key] = value
    return path


def _model(path, arch="small_cnn", num_classes=4):
    spec = model_spec(arch, 1, num_classes, 8, [0.5], [0.25])
    torch.manual_seed(0)
    save_model(build_model(**spec), spec, path)
    return path


def _probs(n, num_classes=4, seed=0):
    p = np.random.default_rng(seed).random((n, num_classes)).astype(np.float32)
    return p / p.sum(1, keepdims=True)


class Workspace:
    """Valid artifacts of every kind, plus a finished output that a failing stage must not touch."""

    def __init__(self, root: Path):
        self.root = root
        self.train = _real(root / "train.h5")
        write_images(root / "images.h5", _images(N_SYN, seed=1), provenance("merge", {}))
        self.images = root / "images.h5"
        keep = np.arange(N_SYN) % 3 > 0
        labels = np.arange(N_SYN) % 4
        write_arrays(root / "filter.h5", provenance("filter", {}), keep=keep, labels=labels)
        self.filter = root / "filter.h5"
        self.out = root / "selected.h5"  # an earlier, finished output of the failing stage
        select_images(images_path=self.images, filter_path=self.filter, out_path=self.out, method="random", k=None,
                      seed=0)
        self.lanet = _model(root / "lanet.pt")

    def path(self, name):
        return self.root / name

    def npz(self, name, **arrays):
        np.savez(self.root / name, **arrays)
        return str(self.root / name)


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


# Each case: (id, build(ws) -> the failing call, strings the one error message must contain).

def missing_hdf5(ws):
    return lambda: select_images(images_path=ws.path("absent.h5"), filter_path=ws.filter, out_path=ws.out,
                                 method="random", k=None, seed=0), \
        ["absent.h5", "file not found"]


def truncated_hdf5(ws):
    data = ws.images.read_bytes()
    ws.path("truncated.h5").write_bytes(data[:len(data) // 2])
    return lambda: select_images(images_path=ws.path("truncated.h5"), filter_path=ws.filter, out_path=ws.out,
                                 method="random", k=None, seed=0), \
        ["truncated.h5", "not a readable HDF5 file"]


def wrong_shape_shard(ws):
    write_images(ws.path("shard_0.h5"), _images(3), {"image_offset": 0})
    write_images(ws.path("shard_1.h5"), _images(3, (4, 4, 1)), {"image_offset": 3})
    return lambda: merge_shards(shard_paths=[ws.path("shard_0.h5"), ws.path("shard_1.h5")], out_path=ws.out), \
        ["shard_1.h5", "(4, 4, 1), expected (8, 8, 1)"]


def wrong_shape_synthetic(ws):
    write_images(ws.path("syn4x4.h5"), _images(40, (4, 4, 1)), {}, labels=np.zeros(40, dtype=np.int64))
    return lambda: train(train_path=ws.train, model_out=ws.out, history_out=ws.path("history.csv"),
                         checkpoint_path=ws.path("ckpt.pt"), settings=TRAIN, seed=0,
                         synthetic_path=ws.path("syn4x4.h5"), progress=False), \
        ["syn4x4.h5", "shape (4, 4, 1), expected (8, 8, 1)"]


def wrong_dtype(ws):
    _real(ws.path("float.h5"), images=_images(64).astype(np.float32) / 255)
    return lambda: train(train_path=ws.path("float.h5"), model_out=ws.out, history_out=ws.path("history.csv"),
                         checkpoint_path=ws.path("ckpt.pt"), settings=TRAIN, seed=0,
                         progress=False), ["float.h5", "'images' must be uint8 NHWC, got float32"]


def values_out_of_range(ws):
    images = _images(10).astype(np.int16) + 45  # up to 300
    train_npz = ws.npz("range.npz", image=images, label=np.zeros(10, dtype=np.int64))
    source = {"kind": "npz", "train": train_npz, "test": train_npz}
    return lambda: prepare_dataset(name="mine", source=source, seed=0, train_out=ws.path("t.h5"), test_out=ws.out), \
        ["range.npz", "image values", "outside 0..255"]


def nan_images(ws):
    images = _images(10).astype(np.float32) / 255
    images[3, 2, 2, 0] = np.nan
    train_npz = ws.npz("nan.npz", image=images, label=np.zeros(10, dtype=np.int64))
    source = {"kind": "npz", "train": train_npz, "test": train_npz}
    return lambda: prepare_dataset(name="mine", source=source, seed=0, train_out=ws.path("t.h5"),
                                   test_out=ws.out), ["nan.npz", "NaN or Inf"]


def inf_probabilities(ws):
    probs = _probs(N_SYN)
    probs[5, 1] = np.inf
    write_arrays(ws.path("labels_inf.h5"), {}, labels=np.zeros(N_SYN, dtype=np.int64), lanet_probs=probs,
                 splitnet_probs=_probs(N_SYN, seed=1))
    return lambda: filter_images(labels_path=ws.path("labels_inf.h5"), out_mask=ws.out,
                                 out_counts=ws.path("counts.csv"), threshold=0.9), \
        ["labels_inf.h5", "NaN or Inf"]


def labels_out_of_range(ws):
    _real(ws.path("badlabels.h5"), labels=np.arange(64) % 6)  # classes 0..5 in a 4-class set
    return lambda: train(train_path=ws.path("badlabels.h5"), model_out=ws.out, history_out=ws.path("history.csv"),
                         checkpoint_path=ws.path("ckpt.pt"), settings=TRAIN, seed=0,
                         progress=False), ["badlabels.h5", "labels must lie in [0, 3], found 0..5"]


def length_mismatch(ws):
    _real(ws.path("short.h5"), labels=np.arange(63) % 4)
    return lambda: read_image_set(ws.path("short.h5"), 4), ["short.h5", "64 images but 63 labels"]


def npz_without_keys(ws):
    path = ws.npz("keys.npz", x=_images(4), y=np.zeros(4, dtype=np.int64))
    source = {"kind": "npz", "train": path, "test": path}
    return lambda: prepare_dataset(name="mine", source=source, seed=0, train_out=ws.path("t.h5"), test_out=ws.out), \
        ["keys.npz", "no key 'image' (keys: x, y)"]


def k_too_large(ws):
    return lambda: select_images(images_path=ws.images, filter_path=ws.filter, out_path=ws.out, method="random",
                                 k=1000, seed=0), \
        ["filter.h5", "k=1000", "selection.k", "only 26 passed the filter"]


def empty_filter(ws):
    write_arrays(ws.path("filter_empty.h5"), {}, keep=np.zeros(N_SYN, bool), labels=np.zeros(N_SYN, np.int64))
    return lambda: select_images(images_path=ws.images, filter_path=ws.path("filter_empty.h5"), out_path=ws.out,
                                 method="random", k=None, seed=0), \
        ["filter_empty.h5", "the filter kept no synthetic images"]


def checkpoint_other_architecture(ws):
    _model(ws.path("mlp.pt"), arch="mlp")
    settings = {"arch": "small_cnn", "checkpoint": str(ws.path("mlp.pt"))}
    return lambda: prepare_labeler(slot="lanet", train_path=ws.train, test_path=ws.train, model_out=ws.out,
                                   metrics_out=ws.path("m.csv"), history_out=ws.path("h.csv"),
                                   checkpoint_path=ws.path("c.pt"), settings=settings, seed=0), \
        ["mlp.pt", "checkpoint is a 'mlp', config expects 'small_cnn'"]


def checkpoint_other_classes(ws):
    _model(ws.path("three.pt"), num_classes=3)
    return lambda: pseudo_label(images_path=ws.images, lanet_path=ws.lanet, splitnet_path=ws.path("three.pt"),
                                out_path=ws.out, progress=False), \
        ["three.pt", "checkpoint has 3 classes, dataset has 4"]


def not_a_checkpoint(ws):
    ws.path("notes.pt").write_text("not a checkpoint\n")
    return lambda: load_model(ws.path("notes.pt")), ["notes.pt", "not a readable checkpoint"]


def not_a_diffusers_model(ws):
    ws.path("plain").mkdir()
    (ws.path("plain") / "weights.bin").write_bytes(b"\0" * 16)
    settings = {"kind": "diffusers", "scheduler": "ddim", "steps": 2, "n_images": 4, "n_shards": 1, "batch_size": 2}
    return lambda: sample_shard(source=str(ws.path("plain")), out_path=ws.out, shard=0, settings=settings, seed=0), \
        ["plain", "not a diffusers model directory (no model_index.json)"]


def hdf5_changed_after_writing(ws):
    with h5py.File(ws.images, "r+") as handle:  # one pixel changed behind the pipeline's back
        handle["images"][0, 0, 0, 0] ^= 0xFF

    def run():
        with verified_inputs([ws.images, ws.filter]):
            select_images(images_path=ws.images, filter_path=ws.filter, out_path=ws.out, method="random", k=None,
                          seed=0)
    return run, ["images.h5", "content checksum mismatch: file changed after it was written"]


def checkpoint_changed_after_writing(ws):
    checkpoint = torch.load(ws.lanet, weights_only=True)
    checkpoint["state_dict"]["1.0.weight"][0, 0, 0, 0] += 1.0  # keeps the recorded digest
    torch.save(checkpoint, ws.lanet)
    return lambda: pseudo_label(images_path=ws.images, lanet_path=ws.lanet, splitnet_path=ws.lanet, out_path=ws.out,
                                progress=False), \
        ["lanet.pt", "content checksum mismatch"]


def gamma_out_of_range_in_trainer(ws):
    return lambda: TrainSettings.from_dict({**TRAIN, "gamma": 1.2}), ["training setting gamma: 1.2 is greater than the maximum of 1"]


def threshold_out_of_range(ws):
    return lambda: filter_images(labels_path=ws.path("labels.h5"), out_mask=ws.out, out_counts=ws.path("counts.csv"),
                                 threshold=1.5), \
        ["filter threshold must lie in [0, 1], got 1.5"]


def _config_case(change, *expected):
    def build(ws, config):
        bad = copy.deepcopy(config)
        change(bad["datasets"]["digits"], bad)

        def run():
            validate(bad, SCHEMA)
            check_config(bad)
        return run, list(expected)
    build.config = True
    return build


CONFIG_CASES = [
    ("config_wrong_type", _config_case(lambda d, c: d["training"].update(epochs="ten"), "epochs", "'ten'")),
    ("config_out_of_range", _config_case(lambda d, c: d["training"].update(batch_size=0), "batch_size", "minimum")),
    ("eps_negative", _config_case(lambda d, c: d["threats"]["linf"].update(eps=-0.1), "eps", "-0.1")),
    ("gamma_above_one", _config_case(lambda d, c: d["training"].update(gamma=1.5), "gamma", "maximum of 1")),
    ("gamma_below_zero", _config_case(lambda d, c: d["training"].update(gamma=-0.1), "gamma", "minimum of 0")),
    ("unknown_architecture", _config_case(lambda d, c: d["training"].update(architectures=["vgg16"]),
                                          "architectures", "'vgg16'")),
    ("unknown_generator", _config_case(lambda d, c: d["training"].update(generator="vae"),
                                       "datasets.digits.training.generator", "'vae' is not a key")),
    ("unknown_dataset", _config_case(lambda d, c: c.update(default_datasets=["mnist"]),
                                     "default_datasets", "'mnist' is not a key of datasets")),
    ("unknown_dataset_kind", _config_case(lambda d, c: d["source"].update(kind="imagenet"), "kind", "'imagenet'")),
]

CASES = [(f.__name__, f) for f in (
    missing_hdf5, truncated_hdf5, wrong_shape_shard, wrong_shape_synthetic, wrong_dtype, values_out_of_range,
    nan_images, inf_probabilities, labels_out_of_range, length_mismatch, npz_without_keys, k_too_large,
    empty_filter, checkpoint_other_architecture, checkpoint_other_classes, not_a_checkpoint,
    not_a_diffusers_model, hdf5_changed_after_writing, checkpoint_changed_after_writing,
    gamma_out_of_range_in_trainer, threshold_out_of_range)] + CONFIG_CASES


@pytest.mark.parametrize("build", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly_and_changes_nothing(tmp_path, build, shipped_config):
    ws = Workspace(tmp_path)
    if build.__name__ == "threshold_out_of_range":
        write_arrays(ws.path("labels.h5"), {}, labels=np.zeros(N_SYN, np.int64), lanet_probs=_probs(N_SYN),
                     splitnet_probs=_probs(N_SYN))
    call, expected = build(ws, shipped_config) if getattr(build, "config", False) else build(ws)
    before = _snapshot(tmp_path)
    with pytest.raises((ArtifactError, ConfigError, WorkflowError)) as info:
        call()
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert _snapshot(tmp_path) == before, "a failed stage changed, added or removed files"


def test_the_table_has_enough_cases():
    assert len(CASES) >= 15 and len({name for name, _ in CASES}) == len(CASES)


def test_logged_job_refuses_a_changed_input_before_the_stage_runs(tmp_path):
    """The central check every workflow script goes through: a mismatching input stops the job."""
    ws = Workspace(tmp_path)
    with h5py.File(ws.filter, "r+") as handle:
        handle["keep"][0] = not handle["keep"][0]
    smk = SimpleNamespace(input=[str(ws.images), str(ws.filter)], log=[str(tmp_path / "job.log")], threads=1,
                          rule="select_synthetic", wildcards={})
    ran = []
    with pytest.raises(ArtifactError, match="filter.h5: content checksum mismatch"):
        with logged_job(smk):
            ran.append(True)  # pragma: no cover
    assert not ran
    assert "filter.h5: content checksum mismatch" in (tmp_path / "job.log").read_text()


# --------------------------------------------------------------------------- through Snakemake


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "snakemake", *args, "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(workdir / "bad.yaml")]  # options taking lists come last
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("override, key", [
    ({"training": {"epochs": "ten"}}, "['training']['epochs']"),
    ({"threats": {"linf": {"eps": -0.1}}}, "['threats']['linf']['eps']"),
    ({"training": {"gamma": 1.5}}, "['training']['gamma']"),
    ({"training": {"generator": "vae"}}, "datasets.digits.training.generator"),
])
def test_bad_config_stops_snakemake_before_any_job(tmp_path, override, key):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"datasets": {"digits": override}}))
    result = _snakemake(tmp_path, "-n")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert key in output
    assert "Job stats" not in output and "rule prepare_data" not in output  # no plan, no job
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


SELECTED = "results/digits/synthetic/ddpm/selected/random.h5"


def _synthetic_workdir(tmp_path: Path, **selection) -> Path:
    (tmp_path / "artifacts").mkdir()
    ws = Workspace(tmp_path / "artifacts")
    target = tmp_path / "results/digits/synthetic/ddpm"
    target.mkdir(parents=True)
    for name in ("images.h5", "filter.h5"):
        shutil.copy2(ws.path(name), target / name)
    # no audit input: these hand-made upstream files are the selection's only inputs
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"datasets": {"digits": {"selection": selection,
                                                                              "audit": {"drop": False}}}}))
    return target


@pytest.mark.parametrize("problem", ["changed_input", "k_too_large"])
def test_stage_error_exits_non_zero_and_keeps_inputs(tmp_path, problem):
    """The real select_synthetic script under Snakemake: non-zero exit, the error in the job log,
    the inputs untouched, no output."""
    synthetic = _synthetic_workdir(tmp_path, **({"k": 1000} if problem == "k_too_large" else {}))
    if problem == "changed_input":
        with h5py.File(synthetic / "images.h5", "r+") as handle:
            handle["images"][5] = 0
        expected = "images.h5: content checksum mismatch: file changed after it was written"
    else:
        expected = "filter.h5: cannot select k=1000 images (selection.k): only 26 passed the filter"
    before = _snapshot(synthetic)
    # only this rule: the hand-made upstream files stand in for the rest of the DAG
    result = _snakemake(tmp_path, SELECTED, "--cores", "1", "--allowed-rules", "select_synthetic")
    assert result.returncode != 0
    log = (tmp_path / "logs/select_synthetic/digits/ddpm/random.log").read_text()
    assert expected in log, log[-2000:]
    assert _snapshot(synthetic) == before  # inputs untouched, no output, no temporary file
