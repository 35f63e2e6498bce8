"""A throwaway one-node SLURM cluster (munged + slurmctld + slurmd) on 127.0.0.1 for the tests.

Everything lives under one private directory: the rendered tests/slurm/*.conf, a fresh munge key
and socket, state, spool and logs. Ports are picked free, and clients find the cluster through
$SLURM_CONF, so a cluster already running on this machine (or /etc/slurm) is never touched.
Only the daemons started here are stopped, by their PIDs."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent / "slurm"
DAEMONS = ("munged", "slurmctld", "slurmd", "slurmstepd", "sbatch", "squeue", "srun", "scontrol")


def missing_tools() -> list[str]:
    return [tool for tool in DAEMONS if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    def __init__(self, root: Path, partitions: list[str]):
        self.root = root
        self.partitions = partitions  # the first is the default partition
        self.conf = root / "slurm.conf"
        self.bin = root / "bin"
        self.processes: list[subprocess.Popen] = []

    @property
    def env(self) -> dict:
        """The environment for clients (sbatch, squeue, Snakemake) of this cluster. The shim
        directory comes first on PATH: Snakemake's slurm-jobstep drops every SLURM_* variable,
        $SLURM_CONF included, before its inner `srun`, so the shim puts it back."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{self.bin}:{os.environ['PATH']}"}

    def render(self) -> None:
        for name in ("state", "spool", "log"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        lines = [f"PartitionName={name} Nodes=localhost MaxTime=INFINITE State=UP"
                 + (" Default=YES" if i == 0 else "") for i, name in enumerate(self.partitions)]
        fields = {"USER": getpass.getuser(), "STATE": str(self.root), "CTLD_PORT": str(free_port()),
                  "SLURMD_PORT": str(free_port()), "PARTITIONS": "\n".join(lines)}
        text = (HERE / "slurm.conf").read_text()
        for key, value in fields.items():
            text = text.replace(f"@{key}@", value)
        unfilled = re.findall(r"@[A-Z_]+@", "\n".join(l for l in text.splitlines() if not l.startswith("#")))
        assert not unfilled, f"unfilled fields in slurm.conf: {unfilled}"
        self.conf.write_text(text)
        shutil.copy(HERE / "gres.conf", self.root / "gres.conf")  # read from beside $SLURM_CONF
        self.bin.mkdir(exist_ok=True)
        shim = self.bin / "srun"
        shim.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec "{shutil.which("srun")}" "$@"\n')
        shim.chmod(0o755)
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)

    def _start(self, *command: str) -> subprocess.Popen:
        log = open(self.root / "log" / f"{Path(command[0]).name}.out", "w")
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start(self, timeout: float = 60) -> None:
        self.render()
        sbin = lambda name: shutil.which(name) or shutil.which(name, path="/usr/sbin")  # noqa: E731
        self._start(sbin("munged"), "--foreground", "--force", f"--socket={self.root}/munge.socket",
                    f"--key-file={self.root}/munge.key", f"--pid-file={self.root}/munged.pid",
                    f"--log-file={self.root}/log/munged.log", f"--seed-file={self.root}/munged.seed")
        self._wait(lambda: (self.root / "munge.socket").exists(), timeout, "munged")
        self._start(sbin("slurmctld"), "-D", "-f", str(self.conf))
        self._wait(lambda: self.run("scontrol", "ping").returncode == 0, timeout, "slurmctld")
        self._start(sbin("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf))
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%T").stdout.split()[:1] == ["idle"], timeout, "slurmd")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} exited while starting {what}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"{what} not ready after {timeout} s:\n{self.logs()}")

    def run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)

    def logs(self) -> str:
        return "\n".join(f"== {path.name}\n{path.read_text()[-3000:]}" for path in sorted((self.root / "log").iterdir()))

    def stop(self) -> None:
        for process in reversed(self.processes):  # slurmd, slurmctld, munged: by PID
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
