"""Faults: a job killed with SIGKILL mid-stage, then rerun, resumes from what was finished
(the last training checkpoint, the finished sampling shards) and produces exactly what an
uninterrupted run produces; nothing half-written ever looks complete.

The kills are real: a subprocess (python running the package call, or Snakemake and all its
job processes) gets SIGKILL at a point detected on disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from port.artifacts import CHECKSUM_KEY, load_torch, provenance, verify_hdf5, write_images
from port.generators import merge_shards, sample_diffusers_shard
from port.models import load_model
from port.training import train

REPO = Path(__file__).resolve().parents[1]
SRC = str(REPO / "src")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start(command: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """A process in its own session, so that SIGKILL reaches it and every child it spawned."""
    return subprocess.Popen(command, cwd=cwd, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill_when(process: subprocess.Popen, condition, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the process ended (rc {process.returncode}) before the kill point")
        if time.time() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("the kill point never came")
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # kill -9, the whole process group
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


# --------------------------------------------------------------------------- training


def _real_and_synthetic(tmp_path):
    gen = np.random.default_rng(0)
    labels = np.arange(256) % 4
    images = np.clip(gen.normal(64 + 40 * labels[:, None, None, None], 30, (256, 8, 8, 1)), 0, 255).astype(np.uint8)
    attrs = provenance("prepare_data", {}, 0, num_classes=4, channel_mean=[0.5], channel_std=[0.25])
    write_images(tmp_path / "train.h5", images, attrs, labels=labels)
    syn_labels = gen.integers(0, 4, 300)
    syn = np.clip(gen.normal(64 + 40 * syn_labels[:, None, None, None], 30, (300, 8, 8, 1)), 0, 255).astype(np.uint8)
    write_images(tmp_path / "synthetic.h5", syn, provenance("select", {}), labels=syn_labels)
    return tmp_path / "train.h5", tmp_path / "synthetic.h5"


SETTINGS = {"arch": "small_cnn", "epochs": 5, "batch_size": 16, "lr": 0.05, "gamma": 0.4,
            "threat": {"norm": "linf", "eps": 0.1, "step_size": 0.05, "steps": 2}, "val_attack_steps": 2}


def _train_call(train_path, synthetic_path, out: Path) -> list[str]:
    code = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "from port.training import train\n"
        f"train(train_path={str(train_path)!r}, model_out={str(out / 'model.pt')!r}, "
        f"history_out={str(out / 'history.csv')!r}, checkpoint_path={str(out / 'ckpt' / 'run.pt')!r}, "
        f"settings={SETTINGS!r}, seed=3, synthetic_path={str(synthetic_path)!r}, progress=False)\n"
    )
    return [sys.executable, "-c", "import logging, sys; logging.basicConfig(stream=sys.stderr, level=logging.INFO)\n"
            + code]


def test_training_killed_mid_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
    train_path, synthetic_path = _real_and_synthetic(tmp_path)
    reference = tmp_path / "reference"
    train(train_path=train_path, model_out=reference / "model.pt", history_out=reference / "history.csv",
          checkpoint_path=reference / "ckpt.pt", settings=SETTINGS, seed=3,
          synthetic_path=synthetic_path, progress=False)

    run = tmp_path / "run"
    checkpoint = run / "ckpt" / "run.pt"
    process = _start(_train_call(train_path, synthetic_path, run), tmp_path, tmp_path / "first.log")
    _kill_when(process, checkpoint.is_file)  # killed during the epoch after the first checkpoint

    assert not (run / "model.pt").exists() and not (run / "history.csv").exists()  # nothing looks finished
    saved = load_torch(checkpoint)  # the checkpoint on disk is whole (verified against its digest)
    done = saved["state"]["epoch"]
    assert 1 <= done < SETTINGS["epochs"]
    finished_epochs = pd.DataFrame(saved["state"]["history"])

    rerun = subprocess.run(_train_call(train_path, synthetic_path, run), cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"after epoch {done}" in rerun.stderr  # resumed, did not start over
    assert not checkpoint.exists() and not list(run.rglob("*.tmp"))

    expected, _ = load_model(reference / "model.pt")
    got, spec = load_model(run / "model.pt")
    reference_state, state = expected.state_dict(), got.state_dict()
    assert reference_state.keys() == state.keys()
    assert all(torch.equal(reference_state[k], state[k]) for k in state), "resumed weights differ"
    history = pd.read_csv(run / "history.csv")
    reference_history = pd.read_csv(reference / "history.csv")
    timing = ["epoch_seconds"]
    pd.testing.assert_frame_equal(history.drop(columns=timing), reference_history.drop(columns=timing))
    # the epochs finished before the kill were taken from the checkpoint, not trained again
    np.testing.assert_array_equal(history["epoch_seconds"][:done], finished_epochs["epoch_seconds"])
    assert spec["metadata"]["best_epoch"] == load_model(reference / "model.pt")[1]["metadata"]["best_epoch"]


# --------------------------------------------------------------------------- sampling (Snakemake)


N_IMAGES, N_SHARDS = 9, 3
GENERATOR = {"scheduler": "ddpm", "steps": 60, "n_images": N_IMAGES, "n_shards": N_SHARDS, "batch_size": 1}


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    out = tmp_path_factory.mktemp("generator") / "unet"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(out)
    return out


def _workdir(tmp_path: Path, model: Path) -> Path:
    config = {"datasets": {"digits": {"generators": {"ddpm": {**GENERATOR, "model": str(model)}}}}}
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


TARGET = "results/digits/synthetic/ddpm/images.h5"
SHARDS = "results/digits/synthetic/ddpm"


def _snakemake(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
            "--configfile", str(workdir / "tiny.yaml"), *args]


def _reference_images(tmp_path: Path, model: Path) -> np.ndarray:
    """The same shards sampled and merged by direct package calls, without interruption."""
    from port.seeds import derive_seed

    seed = derive_seed(0, "generator", "ddpm")
    settings = {"kind": "diffusers", "eta": 0.0, **GENERATOR}
    paths = [tmp_path / f"ref_{shard}.h5" for shard in range(N_SHARDS)]
    for shard, path in enumerate(paths):
        sample_diffusers_shard(str(model), path, shard, settings, seed, progress=False)
    merge_shards(shard_paths=paths, out_path=tmp_path / "ref.h5")
    with h5py.File(tmp_path / "ref.h5") as handle:
        return handle["images"][()]


def test_sampling_killed_mid_shard_reruns_only_unfinished_shards(tmp_path, unet_dir):
    workdir = _workdir(tmp_path / "wd", unet_dir)
    shard_dir = workdir / SHARDS

    def one_finished_one_half_written():  # Snakemake may run the shards in any order
        return any(shard_dir.glob("shard_*.h5")) and any(shard_dir.glob(".shard_*.h5.*.tmp"))

    process = _start(_snakemake(workdir, "--cores", "1", TARGET), workdir, tmp_path / "first.log")
    _kill_when(process, one_finished_one_half_written)

    # the killed shard left only a hidden temporary file: no shard file that looks complete
    half_written = {p.name[1:].split(".h5")[0] + ".h5" for p in shard_dir.glob(".shard_*.h5.*.tmp")}
    finished = {p.name: (p.stat(), p.read_bytes()) for p in shard_dir.glob("shard_*.h5")}
    assert half_written and finished and not half_written & set(finished) and not (workdir / TARGET).exists()
    for name in finished:
        verify_hdf5(shard_dir / name)

    # the lock of the killed run is released; the plan reruns the unfinished shards and the merge only
    unlock = subprocess.run(_snakemake(workdir, "--unlock"), capture_output=True, text=True, env=_env())
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    plan = subprocess.run(_snakemake(workdir, "-n", "--rerun-incomplete", TARGET), capture_output=True, text=True,
                          env=_env())
    assert plan.returncode == 0, plan.stderr[-2000:]
    outputs = [line.split(":", 1)[1].strip() for line in plan.stdout.splitlines() if line.strip().startswith("output:")]
    unfinished = sorted(f"{SHARDS}/shard_{i}.h5" for i in range(N_SHARDS) if f"shard_{i}.h5" not in finished)
    assert sorted(o for o in outputs if "shard_" in o) == unfinished
    assert len(set(outputs)) == len(outputs)  # no two jobs write the same file

    rerun = subprocess.run(_snakemake(workdir, "--cores", "1", "--rerun-incomplete", TARGET), capture_output=True,
                           text=True, env=_env(), timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    # the finished shards were kept as they were, not recomputed
    for name, (stat, content) in finished.items():
        after = (shard_dir / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
        assert (shard_dir / name).read_bytes() == content
    assert not list(shard_dir.glob(".*.tmp")), "temporary files left behind"

    # the result equals an uninterrupted run, exactly
    with h5py.File(workdir / TARGET) as handle:
        merged = handle["images"][()]
        inputs = json.loads(handle.attrs["inputs_sha256"])
    np.testing.assert_array_equal(merged, _reference_images(tmp_path, unet_dir))
    assert verify_hdf5(workdir / TARGET) == verify_hdf5(tmp_path / "ref.h5")
    # the merge recorded the verified checksums of the shards it read
    with h5py.File(shard_dir / "shard_0.h5", "r") as handle:
        assert inputs[f"{SHARDS}/shard_0.h5"] == handle.attrs[CHECKSUM_KEY]
    assert sorted(inputs) == [f"{SHARDS}/shard_{i}.h5" for i in range(N_SHARDS)]

    # merging again is idempotent: the same content, and a second run has nothing to do
    merge_shards(shard_paths=[shard_dir / f"shard_{i}.h5" for i in range(N_SHARDS)], out_path=tmp_path / "again.h5")
    assert verify_hdf5(tmp_path / "again.h5") == verify_hdf5(workdir / TARGET)
    again = subprocess.run(_snakemake(workdir, "-n", TARGET), capture_output=True, text=True, env=_env())
    assert "Nothing to be done" in again.stdout + again.stderr
