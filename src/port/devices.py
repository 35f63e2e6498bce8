"""Give each job on a multi-GPU workstation its own GPU(s).

Snakemake's local executor caps the GPUs in use (`resources: {gpu: N}` in profiles/local) but
does not say which GPU a job should take, so every job would pick GPU 0. `claim_gpus` picks free
indices with an exclusive `fcntl.flock` per GPU index under a lock directory shared by every
process on the machine, and sets CUDA_VISIBLE_DEVICES before CUDA is initialised. The kernel
drops a flock when its file descriptor is closed, so a claim ends with the process however it
ends (kill -9 included) and a crashed job never leaves a GPU claimed.

Nothing is claimed when a scheduler has already chosen the devices: CUDA_VISIBLE_DEVICES is set
(SLURM sets it for `--gpus` jobs), or the job runs inside a SLURM allocation.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import os
import re
import tempfile
import time

LOCK_DIR_ENV = "PORT_GPU_LOCK_DIR"
GPU_COUNT_ENV = "PORT_GPU_COUNT"

log = logging.getLogger("port.devices")


def default_lock_dir() -> str:
    return os.environ.get(LOCK_DIR_ENV) or os.path.join(tempfile.gettempdir(), "port-gpu-locks")


def gpu_count() -> int:
    """GPUs on this machine: $PORT_GPU_COUNT, else the /dev/nvidia<N> device files. Deliberately
    not torch.cuda.device_count(): it caches its answer before CUDA_VISIBLE_DEVICES is set."""
    if os.environ.get(GPU_COUNT_ENV, "").strip():
        return int(os.environ[GPU_COUNT_ENV])
    return sum(1 for path in glob.glob("/dev/nvidia*") if re.fullmatch(r"/dev/nvidia\d+", path))


def scheduler_assigned() -> bool:
    return "CUDA_VISIBLE_DEVICES" in os.environ or "SLURM_JOB_ID" in os.environ


class GpuClaim:
    """Exclusive locks on GPU indices; `release()` (or the end of the process) frees them."""

    def __init__(self, indices: list[int], handles: list):
        self.indices = indices
        self._handles = handles

    def release(self) -> None:
        for handle in self._handles:
            handle.close()  # closing the descriptor drops its flock
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _try_claim(n: int, count: int, lock_dir: str) -> GpuClaim | None:
    os.makedirs(lock_dir, exist_ok=True)
    handles, indices = [], []
    for index in range(count):
        handle = open(os.path.join(lock_dir, f"gpu{index}.lock"), "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        handles.append(handle)
        indices.append(index)
        if len(indices) == n:
            return GpuClaim(indices, handles)
    for handle in handles:  # not enough free: hold nothing while waiting (no hold-and-wait deadlock)
        handle.close()
    return None


def claim_gpus(n: int, count: int | None = None, lock_dir: str | None = None, timeout: float | None = None,
               poll: float = 2.0) -> GpuClaim | None:
    """Claim `n` free GPU indices out of `count` and set CUDA_VISIBLE_DEVICES to them.

    Returns None (and changes nothing) when no GPU is requested, the machine has none, or a
    scheduler has already assigned devices. Waits while other jobs hold the GPUs; raises
    TimeoutError after `timeout` seconds (None: wait for ever)."""
    if n < 1 or scheduler_assigned():
        return None
    count = gpu_count() if count is None else count
    if count < 1:
        return None
    if n > count:
        raise ValueError(f"the job asks for {n} GPUs, but this machine has {count}")
    lock_dir = lock_dir or default_lock_dir()
    start = last_note = time.monotonic()
    while (claim := _try_claim(n, count, lock_dir)) is None:
        now = time.monotonic()
        if timeout is not None and now - start >= timeout:
            raise TimeoutError(f"no {n} free GPU(s) of {count} in {lock_dir} after {timeout} s")
        if now - last_note >= 60:
            log.info("waiting for %d free GPU(s) of %d (locks in %s)", n, count, lock_dir)
            last_note = now
        time.sleep(poll)
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # indices as nvidia-smi numbers them
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, claim.indices))
    return claim


def job_gpus(smk) -> int:
    """The `gpu` resource of a Snakemake job (0 when the rule or profile sets none)."""
    resources = getattr(smk, "resources", None)
    try:
        return int(getattr(resources, "gpu", 0) or 0)
    except (TypeError, ValueError):
        return 0


def default_device():
    """The torch device a job computes on: the current CUDA device when there is one (each training
    process sets its own, and claim_gpus or the scheduler chose which are visible), else the CPU."""
    import torch  # here, not at the top: every job imports this module, CPU-only ones too

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
