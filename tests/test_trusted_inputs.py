"""Issue 15, table-driven as in test_bad_input.py: files named in config are checked for geometry
and kind when the workflow starts, checkpoints and image sets that meet are checked for the
same geometry, HDF5 attributes are covered by the seal, and errors caused by a default name the
config key. Every case raises one ArtifactError naming the file (or key; a SettingsError for a
setting that does not fit the data) and leaves every file on disk exactly as it was. A few cases
run for real through Snakemake.
"""

from __future__ import annotations

import copy
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from snakemake.utils import validate

from port.artifacts import INPUTS_KEY, provenance, read_attrs, verified_inputs, write_images
from port.errors import ArtifactError, SettingsError
from port.settings.checks import check_config
from port.data import load_npz_images, prepare_dataset
from port.discrimination import discrimination_sets
from port.generators import sample_shard
from port.inputs import check_named_files
from port.labeling import prepare_labeler, pseudo_label
from port.models import build_model, model_spec, save_model
from port.settings.schema import SCHEMA as SCHEMA_FILE
from test_bad_input import Workspace, _images, _model, _snapshot

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(SCHEMA_FILE)
LABELER = {"arch": "small_cnn", "checkpoint": None, "epochs": 1, "batch_size": 16}


def _train_set(path, n=64, shape=(8, 8, 1), dataset="mine"):
    """A real training set as prepare_data writes it (sealed, with the attributes models are built from)."""
    attrs = provenance("prepare_data", {}, 0, dataset=dataset, num_classes=4, channel_mean=[0.5] * shape[-1],
                       channel_std=[0.25] * shape[-1])
    write_images(path, _images(n, shape), attrs, labels=np.arange(n) % 4)
    return path


def _rgb32_model(path, num_classes=4):
    """A labeler for 32x32 RGB images: loads fine, fits no 8x8 grayscale set."""
    spec = model_spec("small_cnn", 3, num_classes, 32, [0.5] * 3, [0.25] * 3)
    save_model(build_model(**spec), spec, path)
    return path


def _npz(ws, name, shape=(8, 8, 1), labels=None, n=12):
    labels = np.arange(n) % 4 if labels is None else labels
    return ws.npz(name, image=_images(len(labels), shape), label=np.asarray(labels))


def _source(train, test):
    return {"kind": "npz", "train": train, "test": test}


# Each case: (build(ws) -> the failing call, strings the one error message must contain).

def _prepare_labeler(ws, train, settings):
    """The train_labeler stage on `train` (as training and test set)."""
    prepare_labeler(slot="lanet", train_path=train, test_path=train, model_out=ws.out, metrics_out=ws.path("m.csv"),
                    history_out=ws.path("h.csv"), checkpoint_path=ws.path("c.pt"), settings=settings, seed=0)


def checkpoint_other_geometry(ws):
    """Item 1: an RGB 32x32 labeler checkpoint given for 8x8 grayscale data."""
    train = _train_set(ws.path("mine_train.h5"))
    _rgb32_model(ws.path("rgb32.pt"))
    settings = {**LABELER, "checkpoint": str(ws.path("rgb32.pt"))}
    return lambda: _prepare_labeler(ws, train, settings), \
        ["rgb32.pt", "32x32x3 (HxWxC)", "mine_train.h5", "8x8x1 (HxWxC)"]


def labelers_other_geometry_than_images(ws):
    _rgb32_model(ws.path("rgb32.pt"))
    return lambda: pseudo_label(images_path=ws.images, lanet_path=ws.path("rgb32.pt"),
                                splitnet_path=ws.path("rgb32.pt"), out_path=ws.out, progress=False), \
        ["rgb32.pt", "32x32x3", "images.h5", "8x8x1"]


def split_other_resolution(ws):
    """Item 2: train and test of different geometry meet in prepare_data."""
    source = _source(_npz(ws, "train.npz"), _npz(ws, "test16.npz", (16, 16, 1)))
    return lambda: prepare_dataset(name="mine", source=source, seed=0, train_out=ws.path("t.h5"), test_out=ws.out), \
        ["test16.npz", "16x16x1", "train.npz", "8x8x1"]


def split_other_channels(ws):
    source = _source(_npz(ws, "train.npz"), _npz(ws, "test_rgb.npz", (8, 8, 3)))
    return lambda: prepare_dataset(name="mine", source=source, seed=0, train_out=ws.path("t.h5"), test_out=ws.out), \
        ["test_rgb.npz", "8x8x3", "train.npz", "8x8x1"]


def imported_set_other_geometry(ws):
    """Item 2: an imported generator set meets the real data when its shard is written."""
    train = _train_set(ws.path("mine_train.h5"))
    path = _npz(ws, "imported4.npz", (4, 4, 1))
    settings = {"kind": "npz", "path": path, "n_shards": 1, "label_key": None}
    return lambda: sample_shard(source=path, out_path=ws.out, shard=0, settings=settings, seed=0, reference=train), \
        ["imported4.npz", "4x4x1", "mine_train.h5", "8x8x1"]


def _verified_labeler_job(ws, train):
    """A train_labeler job as logged_job runs it: inputs verified first, then the stage."""
    def run():
        with verified_inputs([train]):
            _prepare_labeler(ws, train, LABELER)
    return run


def attribute_changed_after_writing(ws):
    """Item 4: num_classes edited behind the pipeline's back (models are built from it)."""
    train = _train_set(ws.path("mine_train.h5"))
    with h5py.File(train, "r+") as handle:
        handle.attrs["num_classes"] = 5
    return _verified_labeler_job(ws, train), ["mine_train.h5", "content checksum mismatch"]


def attribute_name_damaged(ws):
    """A damaged byte in an attribute name: no raw KeyError from a stage that reads the attribute."""
    train = _train_set(ws.path("mine_train.h5"))
    data = train.read_bytes()
    at = data.index(b"num_classes")
    train.write_bytes(data[:at] + b"X" + data[at + 1:])
    return _verified_labeler_job(ws, train), ["mine_train.h5", "content checksum mismatch"]


def input_is_a_directory(ws):
    ws.path("results.h5").mkdir()

    def run():
        with verified_inputs([ws.path("results.h5"), ws.filter]):
            raise AssertionError("the stage ran")  # pragma: no cover
    return run, ["results.h5", "is a directory, expected a file"]


def n_heldout_default_too_large(ws):
    """The schema's n_heldout (10000, the paper's) against a small synthetic set."""
    train = _train_set(ws.path("mine_train.h5"))
    settings = {"n_heldout": 10000, "n_train_synthetic": None, "val_fraction": 0.1}
    outs = {key: ws.path(f"{key}.h5") for key in ("out_real", "out_synthetic", "out_validation", "out_heldout")}
    return lambda: discrimination_sets(train_path=train, test_path=train, synthetic_path=ws.images, **outs,
                                       settings=settings, seed=0), \
        ["datasets.mine.discrimination.n_heldout=10000", "40 synthetic images"]


def batch_size_larger_than_training_set(ws):
    train = _train_set(ws.path("mine_train.h5"))
    settings = {**LABELER, "batch_size": 128}
    return lambda: _prepare_labeler(ws, train, settings), \
        ["datasets.mine.labelers.lanet.batch_size=128", "mine_train.h5", "fewer than one batch"]


def pickled_npz(ws):
    with open(ws.path("pickled.npz"), "wb") as stream:
        pickle.dump({"image": _images(4), "label": np.zeros(4, np.int64)}, stream)
    return lambda: load_npz_images(ws.path("pickled.npz")), ["pickled.npz", "not an npz of arrays"]


def npz_of_objects(ws):
    np.savez(ws.path("objects.npz"), image=np.array([_images(2), "text"], dtype=object), label=np.zeros(2))
    return lambda: load_npz_images(ws.path("objects.npz")), ["objects.npz", "not an npz of arrays", "'image'"]


def npy_given_as_npz(ws):
    np.save(ws.path("lone.npy"), _images(4))
    os.replace(ws.path("lone.npy"), ws.path("lone.npz"))
    return lambda: load_npz_images(ws.path("lone.npz")), ["lone.npz", "not an npz of arrays"]


def class_only_in_test(ws):
    source = _source(_npz(ws, "train.npz", labels=[0, 1, 2, 0]), _npz(ws, "test.npz", labels=[0, 1, 5, 2]))
    return lambda: prepare_dataset(name="mine", source=source, seed=0, train_out=ws.path("t.h5"), test_out=ws.out), \
        ["test.npz", "class(es) [5] appear in test but never in", "train.npz", "source.num_classes"]


# --- files named in config, checked while Snakemake builds the DAG (before any job deletes an output)


def _config_case(change, *expected):
    """change(ws, digits config, config) edits a copy of the shipped config to name a bad file."""
    def build(ws, config):
        bad = copy.deepcopy(config)
        change(ws, bad["datasets"]["digits"], bad)

        def run():
            validate(bad, SCHEMA)
            check_config(bad)
            check_named_files(bad, "digits")
        return run, list(expected)
    build.config = True
    return build


def _npz_source(ws, ds, train, test):
    ds["source"] = _source(train, test)


CONFIG_CASES = [
    ("config_checkpoint_is_a_directory",
     _config_case(lambda ws, ds, c: (ws.path("ckpt_dir").mkdir(), ds["labelers"]["lanet"].update(
         checkpoint=str(ws.path("ckpt_dir")))), "datasets.digits.labelers.lanet.checkpoint", "ckpt_dir",
         "is a directory")),
    ("config_checkpoint_other_geometry",
     _config_case(lambda ws, ds, c: ds["labelers"]["lanet"].update(
         checkpoint=str(_rgb32_model(ws.path("rgb32.pt"), 10))),
                  "datasets.digits.labelers.lanet.checkpoint", "rgb32.pt", "32x32x3", "8x8x1")),
    ("config_checkpoint_other_classes",
     _config_case(lambda ws, ds, c: ds["labelers"]["lanet"].update(checkpoint=str(ws.lanet)),
                  "datasets.digits.labelers.lanet.checkpoint", "lanet.pt", "4 classes, dataset has 10")),
    ("config_checkpoint_not_a_checkpoint",
     _config_case(lambda ws, ds, c: (ws.path("notes.pt").write_text("weights\n"), ds["labelers"]["splitnet"].update(
         checkpoint=str(ws.path("notes.pt")))), "datasets.digits.labelers.splitnet.checkpoint", "notes.pt",
         "not a readable checkpoint")),
    ("config_source_missing",
     _config_case(lambda ws, ds, c: _npz_source(ws, ds, str(ws.path("absent.npz")), _npz(ws, "test.npz")),
                  "datasets.digits.source.train", "absent.npz", "file not found")),
    ("config_source_pickled",
     _config_case(lambda ws, ds, c: (pickled_npz(ws), _npz_source(ws, ds, _npz(ws, "train.npz"),
                                                                  str(ws.path("pickled.npz")))),
                  "datasets.digits.source.test", "pickled.npz", "not an npz of arrays")),
    ("config_source_without_labels",
     _config_case(lambda ws, ds, c: _npz_source(ws, ds, ws.npz("nolabels.npz", image=_images(4)), _npz(ws, "t.npz")),
                  "datasets.digits.source.train", "nolabels.npz", "no key 'label'")),
    ("config_test_other_geometry",
     _config_case(lambda ws, ds, c: _npz_source(ws, ds, _npz(ws, "train.npz"), _npz(ws, "test16.npz", (16, 16, 1))),
                  "datasets.digits.source", "test16.npz", "16x16x1", "train.npz", "8x8x1")),
    ("config_generator_other_geometry",
     _config_case(lambda ws, ds, c: ds["generators"].update(
         imp={"kind": "npz", "path": _npz(ws, "imp.npz", (4, 4, 1))}),
                  "datasets.digits.generators.imp.path", "imp.npz", "4x4x1", "datasets.digits.source (digits)",
                  "8x8x1")),
    ("config_model_directory_without_index",
     _config_case(lambda ws, ds, c: (ws.path("plain").mkdir(), ds["generators"]["ddpm"].update(
         model=str(ws.path("plain")))), "datasets.digits.generators.ddpm.model", "plain",
         "not a diffusers model directory (no model_index.json)")),
    ("config_generator_is_a_directory",
     _config_case(lambda ws, ds, c: (ws.path("imp_dir").mkdir(), ds["generators"].update(
         imp={"kind": "npz", "path": str(ws.path("imp_dir"))})), "datasets.digits.generators.imp.path", "imp_dir",
         "is a directory")),
]

CASES = [(f.__name__, f) for f in (
    checkpoint_other_geometry, labelers_other_geometry_than_images, split_other_resolution,
    split_other_channels, imported_set_other_geometry, attribute_changed_after_writing, attribute_name_damaged,
    input_is_a_directory, n_heldout_default_too_large, batch_size_larger_than_training_set, pickled_npz,
    npz_of_objects, npy_given_as_npz, class_only_in_test)] + CONFIG_CASES
# a setting (a schema default) that does not fit the data: a SettingsError naming the config key
SETTINGS_CASES = (n_heldout_default_too_large, batch_size_larger_than_training_set)


@pytest.mark.parametrize("build", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_untrusted_input_fails_clearly_and_changes_nothing(tmp_path, build, shipped_config):
    ws = Workspace(tmp_path)
    call, expected = build(ws, shipped_config) if getattr(build, "config", False) else build(ws)
    before = _snapshot(tmp_path)
    with pytest.raises(SettingsError if build in SETTINGS_CASES else ArtifactError) as info:
        call()
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "allow_pickle" not in message and "weights_only" not in message  # never advise unpickling a file
    assert _snapshot(tmp_path) == before, "a failed stage changed, added or removed files"


def test_the_config_check_accepts_good_named_files(tmp_path, shipped_config):
    """The early check refuses only bad files: a matching npz source, generator and checkpoint pass."""
    ws = Workspace(tmp_path)
    config = copy.deepcopy(shipped_config)
    ds = config["datasets"]["digits"]
    ds["source"] = {**_source(_npz(ws, "train.npz"), _npz(ws, "test.npz")), "num_classes": 4}
    ds["generators"]["imp"] = {"kind": "npz", "path": _npz(ws, "imp.npz")}
    ds["labelers"]["lanet"]["checkpoint"] = str(ws.lanet)
    ds["labelers"]["splitnet"]["batch_size"] = 8  # a batch the 12 - 1 training images hold
    validate(config, SCHEMA)
    check_config(config)
    check_named_files(config, "digits")


# --------------------------------------------------------------------------- through Snakemake


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "snakemake", *args, "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(workdir / "mine.yaml")]  # targets before --configfile: it takes several values
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def _npz_dataset(workdir: Path, **labelers) -> Path:
    """A tiny npz dataset `mine` with an imported generator set, all named in config."""
    gen = np.random.default_rng(0)
    for name, n in (("train", 48), ("test", 16), ("imported", 24)):
        np.savez(workdir / f"{name}.npz", image=gen.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
                 label=np.arange(n) % 4)
    mine = {"source": {"kind": "npz", "train": "train.npz", "test": "test.npz"},
            "generators": {"imp": {"kind": "npz", "path": "imported.npz", "label_key": None}},
            # batches that fit 48 - 5 images (a larger one is refused when the run is planned), here and in training
            "labelers": {"lanet": {"arch": "small_cnn", "batch_size": 16, **labelers},
                         "splitnet": {"arch": "mlp", "batch_size": 16}},
            "discrimination": {"eps": [0.0, 0.05]}, "scores": {"discriminator_eps": 0.05},
            "generator_ranking": {"generators": ["imp"]},
            "threats": {"linf": {"norm": "linf", "eps": 0.1, "step_size": 0.025, "steps": 2}},
            "training": {"generator": "imp", "architectures": ["small_cnn"], "epochs": 1, "batch_size": 16}}
    (workdir / "mine.yaml").write_text(yaml.safe_dump({"datasets": {"mine": mine}}))
    return workdir


def test_config_named_files_are_tracked_inputs(tmp_path):
    """Each file named in config is an input of the rule that reads it: its digest is in the
    output's provenance, and replacing it reruns exactly that stage."""
    shutil.copy(_model(tmp_path / "given.pt"), tmp_path / "lanet.pt")
    workdir = _npz_dataset(tmp_path, checkpoint="lanet.pt")
    result = _snakemake(workdir, "results/mine/data/train.h5", "--cores", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = yaml.safe_load(read_attrs(workdir / "results/mine/data/train.h5")[INPUTS_KEY])
    assert set(recorded) == {"train.npz", "test.npz"}

    np.savez(workdir / "test.npz", image=np.zeros((16, 8, 8, 1), np.uint8), label=np.arange(16) % 4)
    plan = _snakemake(workdir, "results/mine/data/train.h5", "-n")
    assert plan.returncode == 0 and "rule prepare_data" in plan.stdout and "test.npz" in plan.stdout, plan.stdout
    plan = _snakemake(workdir, "results/mine/synthetic/imp/shard_0.h5", "results/mine/labelers/lanet/model.pt",
                      "-n", "--forceall")
    jobs = {block.split("\n")[0].strip(): block for block in plan.stdout.split("rule ")[1:]}
    assert "imported.npz" in jobs["sample_shard:"] and "results/mine/data/train.h5" in jobs["sample_shard:"]
    assert "lanet.pt" in jobs["train_labeler:"]


@pytest.mark.parametrize("problem", ["checkpoint_other_geometry", "pickled_source"])
def test_bad_named_file_stops_snakemake_before_any_output_is_deleted(tmp_path, problem):
    """The last good result survives: the file is refused when the workflow starts, so Snakemake
    never gets to delete the outputs of the job that would read it."""
    if problem == "checkpoint_other_geometry":
        _rgb32_model(tmp_path / "rgb32.pt")
        workdir = _npz_dataset(tmp_path, checkpoint="rgb32.pt")
        expected = "datasets.mine.labelers.lanet.checkpoint: rgb32.pt: checkpoint is for 32x32x3 (HxWxC) images"
    else:
        workdir = _npz_dataset(tmp_path)
        with open(workdir / "train.npz", "wb") as stream:
            pickle.dump({"image": _images(4)}, stream)
        expected = "datasets.mine.source.train: train.npz: not an npz of arrays"
    earlier = workdir / "results/mine/labelers/lanet"  # a finished result from an earlier run
    earlier.mkdir(parents=True)
    for name in ("model.pt", "history.csv", "metrics.csv"):
        (earlier / name).write_bytes(b"last good result\n")
    before = _snapshot(workdir)
    result = _snakemake(workdir, "results/mine/labelers/lanet/model.pt", "--cores", "1")
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr, (result.stdout + result.stderr)[-3000:]
    assert "allow_pickle" not in result.stdout + result.stderr
    after = {k: v for k, v in _snapshot(workdir).items() if not k.startswith(".snakemake/")}
    assert after == before


def test_content_digest_covers_the_attributes_models_are_built_from(tmp_path):
    """Same datasets, another num_classes: another content_sha256 (so inputs_sha256 tells them apart);
    provenance alone (stage, paths) leaves the digest as it was."""
    digests = []
    for name, stage, classes in (("a.h5", "one", 4), ("b.h5", "two", 4), ("c.h5", "one", 5)):
        attrs = provenance(stage, {}, 0, num_classes=classes, channel_mean=[0.5], channel_std=[0.25])
        write_images(tmp_path / name, _images(8), attrs, labels=np.arange(8) % 4)
        digests.append(read_attrs(tmp_path / name)["content_sha256"])
    assert digests[0] == digests[1] != digests[2]
