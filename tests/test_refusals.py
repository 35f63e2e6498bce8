"""Issue 22: settings that silently meant nothing, and files whose problems surfaced late or
without a name, are refused with one message naming the key or file."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from snakemake.utils import validate

from port.settings.checks import check_config
from port.errors import ArtifactError, ConfigError, SettingsError
from port.settings.schema import SCHEMA as SCHEMA_FILE

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(SCHEMA_FILE)
D = "datasets.digits."


@pytest.fixture(scope="module")
def shipped():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, SCHEMA)
    return config


def _set(config, key, value):
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value


@pytest.mark.parametrize("key, value, message", [
    # item 2: guidance 0 samples from the unconditional model; the class labels would be made up
    (D + "generators.ddpm-cond.guidance_scale", 0.0,
     "datasets.digits.generators.ddpm-cond.guidance_scale: 0 samples without the class"),
    # item 4: a warm-up as long as the run never reaches the configured learning rate or eps
    (D + "training.warmup_epochs", 20,
     "datasets.digits.training.warmup_epochs: 20 leaves no epoch at the full learning rate out of the 20 epochs "
     "(datasets.digits.training.epochs)"),
    (D + "training.eps_warmup_epochs", 25,
     "datasets.digits.training.eps_warmup_epochs: 25 leaves no epoch at the full eps out of the 20 epochs"),
    (D + "training.eps_warmup_epochs", 10,  # fine for the 20-epoch runs, not for the 10-epoch transfer runs
     "datasets.digits.training.eps_warmup_epochs: 10 leaves no epoch at the full eps out of the 10 epochs "
     "(datasets.digits.generator_ranking.epochs)"),
    (D + "studies.gamma.training", {"epochs": 8, "warmup_epochs": 8},
     "datasets.digits.studies.gamma.training.warmup_epochs: 8 leaves no epoch at the full learning rate out of "
     "the 8 epochs (datasets.digits.studies.gamma.training.epochs)"),
    (D + "recipe_study.variants.port-pgd", {"training": {"epochs": 4, "eps_warmup_epochs": 4}},
     "datasets.digits.recipe_study.variants.port-pgd.training.eps_warmup_epochs: 4 leaves no epoch at the full eps"),
    (D + "discrimination.eps_warmup_epochs", 20,
     "datasets.digits.discrimination.eps_warmup_epochs: 20 leaves no epoch at the full eps out of the 20 epochs"),
])
def test_settings_that_mean_nothing_are_refused(shipped, key, value, message):
    bad = copy.deepcopy(shipped)
    _set(bad, key, value)
    with pytest.raises(ConfigError) as info:
        check_config(bad)
    assert message in str(info.value)


def test_warm_ups_shorter_than_every_run_pass(shipped):
    config = copy.deepcopy(shipped)
    _set(config, D + "training.warmup_epochs", 7)  # the filter study trains 8 epochs, the fewest here
    _set(config, D + "training.eps_warmup_epochs", 7.5)
    _set(config, D + "studies.gamma.training", {"epochs": 8, "warmup_epochs": 2})
    _set(config, D + "generators.ddpm-cond.guidance_scale", 0.0)
    _set(config, D + "generators.ddpm-cond.labels_from", "lanet")  # guidance 0 with lanet's labels is plain sampling
    check_config(config)


def _reseal(path: Path) -> None:
    """What a user who knows the seal could do after editing with h5py: write a fresh seal."""
    from port.artifacts import _SEAL_PREFIX, SEAL_BYTES, file_sha256

    with open(path, "r+b") as stream:
        stream.write(_SEAL_PREFIX + file_sha256(path, SEAL_BYTES).encode())


def test_a_resealed_edit_is_refused_because_the_content_digest_is_recomputed(tmp_path):
    """Item 5: labels of a sealed train.h5 edited with h5py and resealed; the stage reading it
    recomputes content_sha256 instead of trusting the recorded one."""
    import h5py
    import numpy as np

    from port.artifacts import provenance, verified_inputs, write_images

    path = tmp_path / "train.h5"
    write_images(path, np.zeros((8, 4, 4, 1), np.uint8), provenance("prepare_data", {}, 0, num_classes=4),
                 labels=np.arange(8) % 4)
    with verified_inputs([path]) as digests:
        good = digests[str(path)]
    with h5py.File(path, "r+") as handle:
        handle["labels"][0] = 3
    _reseal(path)
    before = path.read_bytes()
    with pytest.raises(ArtifactError) as info:
        with verified_inputs([path]):
            pass
    assert f"{path}: 'content_sha256' is not the digest of its content (recorded {good[:16]}" in str(info.value)
    assert path.read_bytes() == before


def test_an_npz_import_takes_only_the_settings_it_reads(shipped):
    """A sampler's keys (batch_size, steps, scheduler) cannot change an imported set's images:
    they are not in its shards' params, so editing them reruns nothing."""
    from port.settings.generation import generator_settings

    def settings(**edits):
        config = copy.deepcopy(shipped)
        config["datasets"]["digits"]["generators"]["imp"] = {"kind": "npz", "path": "imp.npz", **edits}
        validate(config, SCHEMA)
        return generator_settings(config, "digits", "imp")

    assert settings(batch_size=7, steps=3, scheduler="ddpm") == settings() == \
        {"kind": "npz", "path": "imp.npz", "image_key": "image", "label_key": "label", "n_shards": 1, "num_classes": 10}
    assert settings(n_images=100) != settings()


def test_an_empty_npz_archive_is_named_as_such(tmp_path):
    """np.savez() of nothing writes a zip without members: not 'not written by numpy.savez'."""
    import numpy as np

    from port.data import npz_image_shape

    np.savez(tmp_path / "empty.npz")
    with pytest.raises(ArtifactError, match=r"empty.npz: no key 'image' \(keys: none: an empty archive\)"):
        npz_image_shape(tmp_path / "empty.npz")


@pytest.mark.parametrize("c_dim, resolution, message", [
    (3, 8, "sg.pkl: a generator of 3 classes, but labels_from generator needs the dataset's 10 classes"),
    (0, 8, "sg.pkl: an unconditional generator, but labels_from generator needs the dataset's 10 classes"),
    (10, 16, "sg.pkl: images are 16x16x1 (HxWxC), but datasets.digits.source (digits) holds 8x8x1"),
])
def test_a_stylegan_pickle_that_does_not_fit_the_dataset_is_refused_before_sampling(shipped, tmp_path, c_dim,
                                                                                    resolution, message):
    """Item 3 and the late problems: a local pickle's classes and image size are read from its
    record when the run is planned, not found after every shard is sampled."""
    from port.inputs import generator_inputs
    from stylegan_pickles import tiny_generator, write_network_pickle

    path = write_network_pickle(tmp_path / "sg.pkl", tiny_generator(c_dim=c_dim, img_resolution=resolution,
                                                                     img_channels=1))
    config = copy.deepcopy(shipped)
    config["datasets"]["digits"]["generators"]["sg"] = {"kind": "stylegan", "model": str(path), "n_images": 10,
                                                        "labels_from": "generator"}
    validate(config, SCHEMA)
    check_config(config)
    with pytest.raises(ArtifactError) as info:
        generator_inputs(config, "digits", "sg")
    assert "datasets.digits.generators.sg.model: " in str(info.value) and message in str(info.value)
    config["datasets"]["digits"]["generators"]["sg"]["labels_from"] = "lanet"
    if resolution == 8:  # lanet labels the images: the generator's classes do not matter
        assert generator_inputs(config, "digits", "sg") == [str(path)]


@pytest.mark.parametrize("failure, reason", [
    (OSError(28, "No space left on device"), "No space left on device"),
    (RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 5312 vs 5208"), "unexpected pos"),
])
def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch, failure, reason):
    """A full disk during torch.save: one message naming the checkpoint, the old file untouched."""
    import torch

    from port.artifacts import save_torch

    path = tmp_path / "ckpt.pt"
    save_torch({"epoch": 1}, path)
    before = path.read_bytes()

    def fail(obj, target):
        Path(target).write_bytes(b"partial")
        raise failure

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(ArtifactError, match=rf"ckpt.pt: cannot write the checkpoint \(.*{reason}.* MB free on its"):
        save_torch({"epoch": 2}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_an_unwritable_results_folder_names_the_file(tmp_path):
    """A file where the results folder should be (as a read-only folder, refused by the OS)."""
    from port.artifacts import write_csv
    import pandas as pd

    (tmp_path / "results").write_text("not a folder\n")
    with pytest.raises(ArtifactError, match=r"results/mine/x.csv: cannot write in .*results/mine \("):
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "results" / "mine" / "x.csv")


def test_a_checkpoint_with_the_right_spec_and_other_weights_is_refused_when_planned(shipped, tmp_path):
    """Found inside train_labeler before (after Snakemake had deleted the previous model)."""
    import torch

    from port.artifacts import save_torch
    from port.inputs import labeler_inputs
    from port.models import build_model, model_spec

    spec = model_spec("small_cnn", 1, 10, 8, [0.5], [0.25])
    wide = model_spec("small_cnn", 1, 4, 8, [0.5], [0.25])  # weights of a 4-class network under a 10-class spec
    save_torch({"spec": spec, "state_dict": build_model(**wide).state_dict()}, tmp_path / "lanet.pt")
    config = copy.deepcopy(shipped)
    config["datasets"]["digits"]["labelers"]["lanet"]["checkpoint"] = str(tmp_path / "lanet.pt")
    with pytest.raises(ArtifactError, match=r"datasets.digits.labelers.lanet.checkpoint: .*lanet.pt: weights do "
                                            r"not fit a 'small_cnn' \("):
        labeler_inputs(config, "digits", "lanet")
    torch.manual_seed(0)
    save_torch({"spec": spec, "state_dict": build_model(**spec).state_dict()}, tmp_path / "lanet.pt")
    assert labeler_inputs(config, "digits", "lanet") == [str(tmp_path / "lanet.pt")]


def test_a_study_threat_that_is_not_a_threat_is_named(shipped):
    bad = copy.deepcopy(shipped)
    _set(bad, D + "studies.gamma.threat", "l1")
    with pytest.raises(ConfigError, match="datasets.digits.studies.gamma.threat: 'l1' is not a key of"):
        check_config(bad)


def _run_snakemake(workdir: Path, snakefile: Path, *args: str):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "-s", str(snakefile), "-d", str(workdir), *args],
                          capture_output=True, text=True, env=env, timeout=300)


BROKEN_YAML = "datasets:\n  mine:\n    source: {kind: npz, train: a.npz\n    generators: {}\n"


def test_a_yaml_syntax_error_in_the_workflow_config_names_the_file_and_line(tmp_path):
    """Snakemake's own message names neither: the Snakefile checks config/config.yaml first."""
    import shutil

    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "Snakefile", tmp_path / "Snakefile")  # the check runs before any include
    (tmp_path / "config" / "config.yaml").write_text(BROKEN_YAML)
    result = _run_snakemake(tmp_path / "run", tmp_path / "Snakefile")
    assert result.returncode != 0
    assert (f"{tmp_path}/config/config.yaml: line 4, column 15: not valid YAML: expected ',' or '}}', but got ':' "
            "(while parsing a flow mapping from line 3)") in result.stdout + result.stderr, result.stdout[-2000:]


def test_a_yaml_syntax_error_in_a_configfile_is_reported_by_snakemake_without_file_or_line(tmp_path):
    """`--configfile` files are read by Snakemake's command line before the Snakefile runs, so no
    check of ours can name them: this pins what is printed (docs/failures.md says how to find the line)."""
    (tmp_path / "mine.yaml").write_text(BROKEN_YAML)
    result = _run_snakemake(tmp_path, REPO / "Snakefile", "--configfile", str(tmp_path / "mine.yaml"))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "WorkflowError:\nConfig file is not valid JSON or YAML." in output, output[-2000:]
    assert "mine.yaml" not in output  # if Snakemake starts naming the file, update docs/failures.md


def _module(record, *names):
    """The recorded submodule of a G_ema record at `names` (`"synthesis", "b4"`)."""
    for name in names:
        record = record.state["_modules"][name]
    return record


@pytest.mark.parametrize("edit, message", [
    (lambda g: g.state.pop("img_resolution"), "Generator: recorded state has no attribute 'img_resolution'"),
    (lambda g: _module(g, "synthesis", "b4").state["_buffers"].pop("resample_filter"),
     "SynthesisBlock: recorded state has no buffer 'resample_filter'"),
    (lambda g: g.state.update(img_resolution=2 ** 40),
     "SynthesisNetwork: img_resolution 1099511627776 needs one block per resolution from b4 to b1099511627776; "
     "the record has no b16, b32, b64 ..."),
    (lambda g: g.state.update(img_resolution=12), "Generator: recorded img_resolution 12 is not a power of two"),
    (lambda g: g.state.update(img_channels=-3), "Generator: recorded img_channels -3 is not a whole number >= 1"),
    (lambda g: _module(g, "synthesis").state["_init_kwargs"].update(channel_base=-64),
     "SynthesisNetwork: recorded channel_base -64 is not a whole number >= 1"),
    (lambda g: g.state.update(z_dim=2 ** 40),  # no 8 TB weight allocated: the network is built on the meta device
     "G_ema.mapping.fc0.weight has shape (8, 12), expected (8, 1099511627784)"),
    (lambda g: _module(g, "mapping").state.update(num_layers=10 ** 9),
     "MappingNetwork: recorded num_layers 1000000000, but the record holds 3 modules"),
    (lambda g: _module(g, "mapping").state.update(_modules=["fc0"]), "malformed G_ema record (ValueError: "),
    (lambda g: setattr(g, "class_name", None), "not a readable network pickle (a persistent object without a class_name)"),
])
def test_a_malformed_network_pickle_is_one_error_naming_the_file(shipped, tmp_path, edit, message):
    """Missing record fields and absurd sizes: refused when the run is planned (the start-up check
    builds the network on the meta device) and when a shard loads it, never a raw KeyError,
    RuntimeError or MemoryError."""
    from port.inputs import generator_inputs
    from port.stylegan import load_stylegan
    from stylegan_pickles import tiny_generator, write_network_pickle

    record = tiny_generator(img_channels=1)
    edit(record)
    path = write_network_pickle(tmp_path / "sg.pkl", record)
    config = copy.deepcopy(shipped)
    config["datasets"]["digits"]["generators"]["sg"] = {"kind": "stylegan", "model": str(path), "n_images": 10}
    with pytest.raises(ArtifactError) as planned:
        generator_inputs(config, "digits", "sg")
    assert str(planned.value).startswith(f"datasets.digits.generators.sg.model: {path}: ")
    assert message in str(planned.value)
    with pytest.raises(ArtifactError) as loaded:
        load_stylegan(path)
    assert str(loaded.value) == str(planned.value).removeprefix("datasets.digits.generators.sg.model: ")


def test_a_pickle_length_beyond_memory_is_named_not_a_memory_error(tmp_path):
    import struct

    from port.safe_pickle import load_network_pickle

    path = tmp_path / "huge.pkl"  # protocol 4, BINBYTES8 of 2**62 bytes, three of them present
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 62) + b"abc.")
    with pytest.raises(ArtifactError, match=r"huge.pkl: not a readable network pickle \(a length in it exceeds the "
                                            r"free memory; the file holds 15 bytes\)"):
        load_network_pickle(path)


def _lying_npy(shape: tuple, rows: int, dtype=np.uint8) -> bytes:
    """A .npy whose header claims `shape` while only `rows` rows of data follow it."""
    import io

    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                  "shape": shape})
    return stream.getvalue() + np.zeros((rows, *shape[1:]), dtype).tobytes()


def _npz(path: Path, **members: bytes) -> str:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for key, data in members.items():
            archive.writestr(f"{key}.npy", data)
    return str(path)


@pytest.mark.parametrize("where, message", [
    ("source.train", "datasets.digits.source.train: {d}/train.npz: 'image': the .npy header claims uint8 "
                     "(1099511627776, 8, 8, 1) (70368744177664 bytes), but only 3072 bytes follow it"),
    ("source.test", "datasets.digits.source.test: {d}/test.npz: 'label': the .npy header claims int64 "
                    "(1099511627776,) (8796093022208 bytes), but only 128 bytes follow it"),
    ("generators.imp.path", "datasets.digits.generators.imp.path: {d}/imp.npy: the .npy header claims uint8 "
                            "(1000, 8, 8, 1) (64000 bytes), but only 3072 bytes follow it"),
])
def test_npy_headers_claiming_more_data_than_the_file_holds_are_refused(shipped, tmp_path, where, message):
    """Found from the headers when the run is planned (they were taken at their word: a MemoryError
    or a short read inside prepare_data or a shard)."""
    from port.data import load_npz_images
    from port.inputs import check_named_files

    good_images, good_labels = _lying_npy((48, 8, 8, 1), 48), _lying_npy((48,), 48, np.int64)
    train = _npz(tmp_path / "train.npz", image=good_images, label=good_labels)
    test = _npz(tmp_path / "test.npz", image=_lying_npy((16, 8, 8, 1), 16), label=_lying_npy((16,), 16, np.int64))
    if where == "source.train":
        train = _npz(tmp_path / "train.npz", image=_lying_npy((2 ** 40, 8, 8, 1), 48), label=good_labels)
    elif where == "source.test":
        test = _npz(tmp_path / "test.npz", image=_lying_npy((16, 8, 8, 1), 16),
                    label=_lying_npy((2 ** 40,), 16, np.int64))
    config = copy.deepcopy(shipped)
    ds = config["datasets"]["digits"]
    ds["source"] = {"kind": "npz", "train": train, "test": test, "num_classes": 10}
    (tmp_path / "imp.npy").write_bytes(_lying_npy((1000 if where == "generators.imp.path" else 48, 8, 8, 1), 48))
    ds["generators"]["imp"] = {"kind": "npz", "path": {"image": str(tmp_path / "imp.npy")}, "label_key": None}
    ds["labelers"] = {}
    with pytest.raises(ArtifactError) as info:
        check_named_files(config, "digits")
    assert str(info.value) == message.format(d=tmp_path)
    if where.startswith("source"):  # and what prepare_data reads: the same message, not a MemoryError
        with pytest.raises(ArtifactError, match="the .npy header claims"):
            load_npz_images(ds["source"][where.split(".")[1]])


def _local_ddpm(path: Path, num_class_embeds: int | None) -> str:
    """A tiny DDPM written by DDPMPipeline.save_pretrained, class-conditional when num_class_embeds is set."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=num_class_embeds)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10)).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("num_class_embeds, message", [
    (4, "a generator of 3 classes, but labels_from generator needs the dataset's 10 classes"),  # 3 + "no class"
    (None, "an unconditional generator, but labels_from generator needs the dataset's 10 classes"),
    (11, None),
])
def test_a_local_conditional_ddpm_of_other_classes_is_refused_before_sampling(shipped, tmp_path, num_class_embeds,
                                                                              message):
    """Item 3 for DDPMs given as a save_pretrained directory: the classes come from its UNet's
    config.json when the run is planned (a DDPM the pipeline trains has the dataset's classes)."""
    from port.inputs import generator_inputs

    model = _local_ddpm(tmp_path / "ddpm", num_class_embeds)
    config = copy.deepcopy(shipped)
    config["datasets"]["digits"]["generators"]["local"] = {"kind": "diffusers", "model": model, "n_images": 10,
                                                           "labels_from": "generator"}
    validate(config, SCHEMA)
    check_config(config)  # a local directory may label its images: its classes are checked from the file
    if message is None:
        assert generator_inputs(config, "digits", "local") == [model]
        return
    with pytest.raises(ArtifactError) as info:
        generator_inputs(config, "digits", "local")
    assert str(info.value) == f"datasets.digits.generators.local.model: {model}: {message}"


def test_labels_from_generator_with_a_hub_ddpm_is_still_refused(shipped):
    """A hub id's classes are known only after the fetch job: refused by the config check."""
    config = copy.deepcopy(shipped)
    config["datasets"]["digits"]["generators"]["hub"] = {"kind": "diffusers", "model": "google/ddpm-cifar10-32",
                                                         "n_images": 10, "labels_from": "generator"}
    validate(config, SCHEMA)
    with pytest.raises(ConfigError, match="datasets.digits.generators.hub: labels_from generator needs a generator "
                                          "that records labels"):
        check_config(config)


def test_a_study_batch_larger_than_the_training_set_names_the_block_that_sets_it(shipped, tmp_path):
    """Every trainer of the real set is checked at start-up, each at the key its batch_size comes
    from: here the gamma sweep's own training block (the shared block's batch fits)."""
    from port.inputs import check_trainer_batches

    np.savez(tmp_path / "train.npz", image=np.zeros((48, 8, 8, 1), np.uint8), label=np.arange(48) % 10)
    config = copy.deepcopy(shipped)
    ds = config["datasets"]["digits"]
    ds["source"] = {"kind": "npz", "train": str(tmp_path / "train.npz"), "test": str(tmp_path / "train.npz")}
    ds["training"]["batch_size"] = 16
    check_trainer_batches(config, "digits")
    ds["studies"]["gamma"]["training"] = {"epochs": 8, "batch_size": 64}
    with pytest.raises(SettingsError) as info:
        check_trainer_batches(config, "digits")
    assert str(info.value) == (f"datasets.digits.studies.gamma.training.batch_size=64: {tmp_path}/train.npz holds 48 "
                               "images, 43 after the val_fraction=0.1 hold-out: fewer than one batch")
