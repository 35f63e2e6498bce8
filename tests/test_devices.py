"""port.devices: GPU claiming with file locks for `--profile local`. No GPU is needed: the
GPU count is passed explicitly or through $PORT_GPU_COUNT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest

from port import devices
from port.logs import logged_job


@pytest.fixture
def clean_env(tmp_path):
    """No scheduler in sight, and a private lock directory; the environment is restored after."""
    saved = dict(os.environ)
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "CUDA_DEVICE_ORDER", devices.GPU_COUNT_ENV):
        os.environ.pop(name, None)
    os.environ[devices.LOCK_DIR_ENV] = str(tmp_path / "locks")
    yield tmp_path / "locks"
    os.environ.clear()
    os.environ.update(saved)


def claim(n, **kwargs):
    """A claim as a fresh job process makes it (a claim sets CUDA_VISIBLE_DEVICES, which would
    make a second claim in the same process defer to it)."""
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    return devices.claim_gpus(n, **kwargs)


def test_claims_never_share_an_index_and_are_released(clean_env):
    first = claim(1, count=3)
    second = claim(2, count=3)
    assert first.indices == [0] and second.indices == [1, 2]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,2" and os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    with pytest.raises(TimeoutError):
        claim(1, count=3, timeout=0.2, poll=0.05)
    second.release()
    third = claim(2, count=3, timeout=1)
    assert third.indices == [1, 2]
    first.release()
    third.release()


def test_waits_for_a_free_gpu_instead_of_sharing(clean_env):
    held = claim(1, count=1)
    start = time.monotonic()
    os.environ.pop("CUDA_VISIBLE_DEVICES")
    child = subprocess.Popen([sys.executable, "-c", "import time; from port import devices; "
                              "c = devices.claim_gpus(1, count=1, poll=0.05); print(c.indices, time.monotonic())"],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    time.sleep(1.0)
    assert child.poll() is None, "the second claim did not wait for the held GPU"
    held.release()
    out, _ = child.communicate(timeout=30)
    indices, claimed_at = out.rsplit(" ", 1)
    assert indices == "[0]" and float(claimed_at) - start >= 1.0


@pytest.mark.parametrize("how", ["exit", "kill -9"])
def test_a_claim_dies_with_its_process(clean_env, how):
    script = textwrap.dedent(f"""
        import os, sys, time
        from port import devices
        claim = devices.claim_gpus(2, count=2)
        print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
        sys.stdin.readline()  # hold the claim until told to go
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.stdout.readline().strip() == "0,1"
    with pytest.raises(TimeoutError):  # held by the child
        claim(1, count=2, timeout=0.2, poll=0.05)
    if how == "kill -9":
        child.send_signal(signal.SIGKILL)
    else:
        child.stdin.write("go\n")
        child.stdin.flush()
    child.wait(timeout=30)
    assert claim(2, count=2, timeout=5, poll=0.05).indices == [0, 1]


@pytest.mark.parametrize("preset", [{"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": ""},
                                    {"SLURM_JOB_ID": "42"}])
def test_a_scheduler_assignment_is_respected(clean_env, preset):
    os.environ.update(preset)
    assert devices.claim_gpus(1, count=4) is None
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == preset.get("CUDA_VISIBLE_DEVICES")
    assert not clean_env.exists() or not list(clean_env.iterdir())


def test_no_gpu_requested_or_none_present(clean_env):
    assert devices.claim_gpus(0, count=4) is None
    os.environ[devices.GPU_COUNT_ENV] = "0"
    assert devices.claim_gpus(1) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with pytest.raises(ValueError, match="asks for 3 GPUs"):
        devices.claim_gpus(3, count=2)


def _job(tmp_path, gpu):
    return SimpleNamespace(threads=1, log=[str(tmp_path / "job.log")], rule="train_robust", wildcards={}, input=[],
                           resources=SimpleNamespace(gpu=gpu) if gpu is not None else SimpleNamespace())


def test_logged_job_claims_for_gpu_jobs_and_releases_after(clean_env, tmp_path):
    os.environ[devices.GPU_COUNT_ENV] = "2"
    other = claim(1, count=2)  # another job holds GPU 0
    os.environ.pop("CUDA_VISIBLE_DEVICES")
    with logged_job(_job(tmp_path, 1)):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
        with pytest.raises(TimeoutError):
            claim(1, count=2, timeout=0.1, poll=0.05)
    assert "CUDA_VISIBLE_DEVICES=1 (claimed by port.devices)" in (tmp_path / "job.log").read_text()
    other.release()
    assert claim(2, count=2, timeout=1).indices == [0, 1]  # both free again


@pytest.mark.parametrize("gpu", [None, 0])
def test_logged_job_leaves_cpu_jobs_alone(clean_env, tmp_path, gpu):
    os.environ[devices.GPU_COUNT_ENV] = "2"
    with logged_job(_job(tmp_path, gpu)):
        assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_gpu_count_from_environment(monkeypatch):
    monkeypatch.setenv(devices.GPU_COUNT_ENV, "5")
    assert devices.gpu_count() == 5
