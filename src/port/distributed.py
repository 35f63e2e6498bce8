"""Multi-GPU training with torch.distributed: one process per GPU, started the way torchrun does.

A job's GPUs are the visible ones (SLURM sets CUDA_VISIBLE_DEVICES from the profile's `gpu:`
resource). With one GPU or none, `launch` simply calls the function. With more, it starts one
fresh Python process per GPU with torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), hands each the function and its arguments on stdin, and stops them
all as soon as one fails. Fresh interpreters rather than multiprocessing's spawn, which would
re-run the calling Snakemake script (it has no `__main__` guard). The ranks write to this
process's stdout and stderr, which is the job's log. Under an external torchrun the process is
one rank already and runs the function itself.

PORT_CPU_PROCESSES=N runs N gloo processes on the CPU instead of one per GPU: how the tests
exercise this path on machines without GPUs.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import socket
import subprocess
import sys
import time

import torch
import torch.distributed as dist

CPU_PROCESSES = "PORT_CPU_PROCESSES"


def processes() -> int:
    """How many processes train together: torchrun's WORLD_SIZE inside one, else one per visible GPU."""
    if "RANK" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return int(os.environ.get(CPU_PROCESSES) or torch.cuda.device_count())


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def from_rank0(obj):
    """Rank 0's `obj` on every rank; the others wait here while rank 0 computes it."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(t)
        t /= world_size()
    return t


def launch(fn, *args):
    """fn(*args) in every training process; this process's result, or None where it only supervised."""
    if "RANK" in os.environ:
        return _run_rank(fn, args)
    n = processes()
    if n <= 1:
        return fn(*args)
    _supervise(fn, args, n)
    return None


def _run_rank(fn, args):
    """Join the process group that torchrun's environment describes, run fn, leave the group."""
    backend = "nccl" if torch.cuda.is_available() and not os.environ.get(CPU_PROCESSES) else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend)
    try:
        return fn(*args)
    finally:
        dist.destroy_process_group()


def _child_stream(stream):
    """The stream itself when a child process can write to it (a real file), else None (inherit)."""
    try:
        stream.fileno()
        return stream
    except (AttributeError, io.UnsupportedOperation, ValueError):
        return None


def _supervise(fn, args, n: int) -> None:
    """Run n ranks of fn(*args) as child processes and wait for all of them, or for the first failure."""
    with socket.socket() as probe:  # a free port for rank 0's rendezvous store
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    payload = pickle.dumps((fn, args, max(1, torch.get_num_threads() // n)))
    sys.stdout.flush()
    sys.stderr.flush()
    ranks = []
    try:
        for r in range(n):
            env = {**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(n),
                   "LOCAL_WORLD_SIZE": str(n), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            proc = subprocess.Popen([sys.executable, "-c", "from port.distributed import _rank_main; _rank_main()"],
                                    stdin=subprocess.PIPE, stdout=_child_stream(sys.stdout),
                                    stderr=_child_stream(sys.stderr), env=env)
            proc.stdin.write(payload)
            proc.stdin.close()
            ranks.append(proc)
        while None in (codes := [p.poll() for p in ranks]) and not any(codes):
            time.sleep(0.2)
    finally:  # a failed rank leaves the others waiting in a collective: stop them
        for proc in ranks:
            if proc.poll() is None:
                proc.terminate()
            proc.wait()
    failed = {r: proc.returncode for r, proc in enumerate(ranks) if proc.returncode}
    if failed:
        raise RuntimeError(f"training processes failed (rank: exit code) {failed}; their tracebacks are in the log")


def _rank_main() -> None:
    """Entry point of a process started by `_supervise`."""
    fn, args, threads = pickle.load(sys.stdin.buffer)
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO if os.environ["RANK"] == "0" else logging.WARNING,
                        format=f"%(asctime)s rank {os.environ['RANK']} %(name)s %(levelname)s %(message)s")
    _run_rank(fn, args)
