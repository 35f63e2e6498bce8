"""Read NVIDIA network pickles (StyleGAN2-ADA `network-snapshot-*.pkl`) without running their code.

Those pickles are written by `torch_utils.persistence`: every network object is stored as a call
`_reconstruct_persistent_obj(meta)`, where `meta` holds the module's Python source (`module_src`),
the `class_name` and the object's `state` (its `__dict__`: `_parameters`, `_buffers`, `_modules`,
plain attributes, `_init_args`/`_init_kwargs`). A normal `pickle.load` would `exec` that source.
Here the unpickler resolves only an allowlist of globals: tensor and storage reconstruction
(storages are read back by `torch.load(weights_only=True)`), plain containers, numpy scalars, and
the persistence call, which becomes a `PersistentRecord` holding the recorded state; the source
text is kept as data and never executed. Any other global stops the load with an error naming
the pickle and the global.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import ArtifactError

# numpy dtypes a recorded attribute may carry (weight gains are numpy float64 scalars)
NUMPY_SCALAR_DTYPES = frozenset({"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"})


class RefusedPickle(ArtifactError):
    """A pickle that needs a global outside the allowlist (it would run code to load)."""


@dataclass
class PersistentRecord:
    """One persistent network object as recorded: its class name and `__dict__`, never its code."""

    class_name: str
    state: dict
    module_src: str = field(repr=False, default="")

    @property
    def parameters(self) -> dict:
        return {k: v for k, v in self.state.get("_parameters", {}).items() if v is not None}

    @property
    def buffers(self) -> dict:
        return {k: v for k, v in self.state.get("_buffers", {}).items() if v is not None}

    @property
    def modules(self) -> dict:
        return dict(self.state.get("_modules", {}))

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs", {}))

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Every parameter and buffer of this record and its submodules, by dotted name."""
        found = {prefix + k: v for k, v in {**self.parameters, **self.buffers}.items()}
        for name, child in self.modules.items():
            if isinstance(child, PersistentRecord):
                found.update(child.tensors(f"{prefix}{name}."))
        return found


def _persistent_record(meta: dict) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise RefusedPickle(f"persistent object of type {meta.get('type') if isinstance(meta, dict) else meta!r}: "
                            "only recorded classes ('class') are supported")
    if not isinstance(meta.get("class_name"), str):
        raise ArtifactError("a persistent object without a class_name")
    return PersistentRecord(class_name=meta["class_name"], state=meta["state"],
                            module_src=str(meta.get("module_src", "")))


def _storage_from_bytes(data: bytes):
    """A storage written by `torch.save` inside the pickle, read with the weights-only loader."""
    return torch.load(io.BytesIO(data), weights_only=True)


def _numpy_dtype(name, align=False, copy=False):
    if str(name) not in NUMPY_SCALAR_DTYPES:
        raise RefusedPickle(f"numpy dtype '{name}' (only plain numeric scalars are read)")
    return np.dtype(name)


def _numpy_scalar(dtype, data: bytes = b""):
    if not isinstance(dtype, np.dtype) or dtype.str[1:] not in NUMPY_SCALAR_DTYPES:
        raise RefusedPickle(f"numpy scalar of dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "tuple"): tuple,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("dnnlib.util", "EasyDict"): dict,  # an attribute-access dict holding init kwargs
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle, path):
        super().__init__(handle)
        self.path = path

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedPickle(f"{self.path}: refused global {module}.{name} (a network pickle may only "
                                "rebuild tensors, plain containers and recorded persistent objects)") from None

    def persistent_load(self, pid):
        raise RefusedPickle(f"{self.path}: refused persistent id {pid!r} (not a network pickle)")


def load_network_pickle(path) -> dict:
    """The top-level dict of a network pickle (`G`, `D`, `G_ema`, ...), networks as PersistentRecord."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    with open(path, "rb") as handle:
        try:
            data = _RestrictedUnpickler(handle, path).load()
        except RefusedPickle as err:
            raise RefusedPickle(str(err) if str(err).startswith(str(path)) else f"{path}: {err}") from None
        except (ArtifactError, pickle.UnpicklingError, EOFError, ValueError, TypeError, RuntimeError) as err:
            raise ArtifactError(f"{path}: not a readable network pickle ({err})") from err
        except MemoryError:  # an opcode's length field beyond memory: damaged, or not a pickle
            raise ArtifactError(f"{path}: not a readable network pickle (a length in it exceeds the free memory; "
                                f"the file holds {path.stat().st_size} bytes)") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a dict of networks, got {type(data).__name__}")
    return data
