"""How the hot loops run on the device: bf16 autocast, channels_last inputs, optional torch.compile.

Training, attack crafting, certification, synthetic scoring and pseudo-labelling take one
`compute` block from the config (`precision`, `compile`). bf16 applies on CUDA only: CPU autocast
to bf16 is slower than fp32 on most CPUs and would change the CPU results for nothing, so the CPU
always runs fp32 and its results do not depend on the block. Which device types take this fast
path (bf16, cuDNN autotuning, channels_last sampling) is `FAST_PATH_DEVICE_TYPES`, read at each
call: the tests add "cpu" to it to run the CUDA path's code on a CPU (tests/test_fast_path.py).
With `precision: fp32` every path is the plain fp32 computation (certification counts are then
exactly those of a plain loop).
AutoAttack evaluation ignores the block: it stays fp32, as the robust accuracy it reports must be exact.
Stage functions read the block from their settings (absent: the defaults, bf16); the building
blocks they call (pgd, Smooth, synthetic_scores, class_probabilities) take a Compute and run
fp32 without one, so evaluation code that calls them directly stays exact.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn

from .errors import ArtifactError

PRECISIONS = ("bf16", "fp32")
# torch.compile's modes; reduce-overhead replays CUDA graphs, for steps whose kernels are too short
# for the host to launch them as fast as the GPU runs them.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
FAST_PATH_DEVICE_TYPES = frozenset({"cuda"})


def fast_path(device: torch.device | str) -> bool:
    """Whether `device` takes the hot loops' fast path: CUDA (see the module docstring)."""
    return torch.device(device).type in FAST_PATH_DEVICE_TYPES


@dataclass(frozen=True)
class Compute:
    precision: str = "bf16"
    compile: bool = False
    compile_mode: str = "default"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ArtifactError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ArtifactError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")

    @classmethod
    def from_settings(cls, settings: dict | None) -> "Compute":
        """From a config `compute` block; None or {} gives the defaults."""
        settings = settings or {}
        unknown = set(settings) - set(cls.__dataclass_fields__)
        if unknown:
            raise ArtifactError(f"unknown compute setting(s): {', '.join(sorted(unknown))}")
        return cls(**settings)

    def bf16(self, device: torch.device | str) -> bool:
        return self.precision == "bf16" and fast_path(device)

    def autocast(self, device: torch.device | str):
        """bf16 autocast on CUDA when asked for, else a no-op (fp32). On CUDA it also turns on
        cuDNN autotuning: the hot loops repeat a few fixed shapes, so the search pays off at once."""
        device = torch.device(device)
        if fast_path(device):
            torch.backends.cudnn.benchmark = True
        if not self.bf16(device):
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def compiled(self, model: nn.Module) -> nn.Module:
        """`torch.compile(model)` when switched on (it shares the model's parameters), else the model."""
        return torch.compile(model, mode=self.compile_mode) if self.compile else model


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """NCHW images laid out channels-last (what cuDNN's fast convolution kernels want); other shapes unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
