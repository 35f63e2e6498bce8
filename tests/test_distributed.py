"""Launching training processes: in this process with one GPU or none, one process per GPU with
more, one rank under torchrun, and a failed rank stops the rest. (Training equivalence of one and
two processes is tested in test_training.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
import torch
import torch.distributed as dist

from port import distributed


@pytest.fixture
def no_ranks(monkeypatch):
    """A plain job: no torchrun environment, no CPU-process override."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", distributed.CPU_PROCESSES):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("gpus", [0, 1])
def test_one_gpu_or_none_trains_in_this_process(no_ranks, gpus):
    no_ranks.setattr(torch.cuda, "device_count", lambda: gpus)

    def refuse(*args, **kwargs):
        raise AssertionError("no process may be started")

    no_ranks.setattr(subprocess, "Popen", refuse)
    assert distributed.launch(lambda a, b: (a + b, os.getpid(), dist.is_initialized()), 1, 2) == (3, os.getpid(), False)


class FakeRank:
    """A started rank that takes its payload on stdin and succeeds at once."""

    def __init__(self, command, stdin, stdout, stderr, env):
        self.env, self.stdin, self.returncode = env, self, None
        self.payload = b""

    def write(self, data):
        self.payload += data

    def close(self):
        pass

    def poll(self):
        self.returncode = 0
        return 0

    def wait(self):
        return 0


def test_several_gpus_start_one_process_per_gpu(no_ranks):
    no_ranks.setattr(torch.cuda, "device_count", lambda: 4)
    started = []
    no_ranks.setattr(subprocess, "Popen", lambda *a, **k: started.append(FakeRank(*a, **k)) or started[-1])
    assert distributed.processes() == 4
    assert distributed.launch(os.getpid) is None  # this process only supervised
    assert [(p.env["RANK"], p.env["LOCAL_RANK"], p.env["WORLD_SIZE"]) for p in started] == [
        (str(r), str(r), "4") for r in range(4)]
    assert len({(p.env["MASTER_ADDR"], p.env["MASTER_PORT"]) for p in started}) == 1
    assert all(p.payload == started[0].payload != b"" for p in started)


def test_a_failed_rank_stops_the_others(no_ranks):
    no_ranks.setenv(distributed.CPU_PROCESSES, "2")
    code = "import os, time\nif os.environ['RANK'] == '1':\n    raise SystemExit(3)\ntime.sleep(120)"
    started = time.time()
    with pytest.raises(RuntimeError, match="1: 3"):
        distributed.launch(exec, code)
    assert time.time() - started < 60, "rank 0 must be stopped, not waited for"


def test_under_torchrun_the_process_is_one_rank(no_ranks):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           distributed.CPU_PROCESSES: "1"}
    for name, value in env.items():
        no_ranks.setenv(name, value)
    assert distributed.launch(lambda: (dist.is_initialized(), distributed.rank(), distributed.world_size())) == (
        True, 0, 1)
    assert not dist.is_initialized()  # and left again
