"""Tiny StyleGAN2-ADA network pickles in the official layout, written without the official code.

`torch_utils.persistence` pickles each network object as `_reconstruct_persistent_obj(meta)` with
meta = {type: 'class', version, module_src, class_name, state}, where state is the module's
`__dict__` (`_parameters`, `_buffers`, `_modules`, attributes, `_init_args`, `_init_kwargs`).
`RecordedModule.__reduce__` produces exactly that call; while writing, stand-in `torch_utils`
and `dnnlib` modules make the globals resolvable, so the pickle names the same globals the
official one does (`torch_utils.persistence._reconstruct_persistent_obj`, `dnnlib.util.EasyDict`).
"""

from __future__ import annotations

import contextlib
import math
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import torch

MODULE_SRC = "# training/networks.py of StyleGAN2-ADA (source text; never executed by the loader)\n"


def _reconstruct_persistent_obj(meta):  # only its name is pickled
    raise AssertionError("the stand-in reconstruction is never called")


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (pickled by reference as that global)."""


@contextlib.contextmanager
def official_globals():
    """Make `torch_utils.persistence` and `dnnlib.util` importable while pickling."""
    names = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
    saved = {name: sys.modules.get(name) for name in names}
    persistence, util = types.ModuleType("torch_utils.persistence"), types.ModuleType("dnnlib.util")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util.EasyDict = EasyDict
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    EasyDict.__module__ = "dnnlib.util"
    sys.modules.update({"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                        "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util})
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class RecordedModule:
    """One persistent object: reduces to the persistence call with an nn.Module-like __dict__."""

    def __init__(self, class_name, params=None, buffers=None, modules=None, init_args=(), init_kwargs=None,
                 module_src=MODULE_SRC, **attrs):
        self.class_name, self.module_src = class_name, module_src
        self.state = {
            "training": False,
            "_parameters": OrderedDict((k, torch.nn.Parameter(v, requires_grad=False) if v is not None else None)
                                       for k, v in (params or {}).items()),
            "_buffers": OrderedDict(buffers or {}),
            "_non_persistent_buffers_set": set(),
            "_backward_hooks": OrderedDict(),
            "_forward_hooks": OrderedDict(),
            "_forward_pre_hooks": OrderedDict(),
            "_state_dict_hooks": OrderedDict(),
            "_load_state_dict_pre_hooks": OrderedDict(),
            "_modules": OrderedDict(modules or {}),
            **attrs,
            "_init_args": tuple(init_args),
            "_init_kwargs": EasyDict(init_kwargs or {}),
        }

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name, state=self.state)
        return _reconstruct_persistent_obj, (meta,)

    def tensors(self, prefix=""):
        found = {prefix + k: v for k, v in {**self.state["_parameters"], **self.state["_buffers"]}.items()
                 if v is not None}
        for name, child in self.state["_modules"].items():
            found.update(child.tensors(f"{prefix}{name}."))
        return found


def setup_filter(taps=(1, 3, 3, 1)):
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def fully_connected(gen, in_features, out_features, activation="linear", lr_multiplier=1.0, bias_init=0.0):
    return RecordedModule(
        "FullyConnectedLayer",
        params={"weight": torch.randn(out_features, in_features, generator=gen) / lr_multiplier,
                "bias": torch.full([out_features], float(bias_init)) + 0.1 * torch.randn(out_features, generator=gen)},
        init_args=(in_features, out_features), init_kwargs={"activation": activation, "lr_multiplier": lr_multiplier},
        activation=activation, weight_gain=np.float64(lr_multiplier / np.sqrt(in_features)), bias_gain=lr_multiplier)


def synthesis_layer(gen, in_channels, out_channels, w_dim, resolution, up=1, conv_clamp=None, kernel_size=3):
    return RecordedModule(
        "SynthesisLayer",
        params={"weight": torch.randn(out_channels, in_channels, kernel_size, kernel_size, generator=gen),
                "noise_strength": torch.tensor(0.3) + 0.1 * torch.randn([], generator=gen),
                "bias": 0.1 * torch.randn(out_channels, generator=gen)},
        buffers={"resample_filter": setup_filter(), "noise_const": torch.randn(resolution, resolution, generator=gen)},
        modules={"affine": fully_connected(gen, w_dim, in_channels, bias_init=1.0)},
        init_args=(in_channels, out_channels), init_kwargs={"w_dim": w_dim, "resolution": resolution, "up": up},
        resolution=resolution, up=up, use_noise=True, activation="lrelu", conv_clamp=conv_clamp,
        padding=kernel_size // 2, act_gain=math.sqrt(2))


def to_rgb(gen, in_channels, out_channels, w_dim, conv_clamp=None):
    return RecordedModule(
        "ToRGBLayer",
        params={"weight": torch.randn(out_channels, in_channels, 1, 1, generator=gen),
                "bias": 0.1 * torch.randn(out_channels, generator=gen)},
        modules={"affine": fully_connected(gen, w_dim, in_channels, bias_init=1.0)},
        init_args=(in_channels, out_channels), init_kwargs={"w_dim": w_dim, "conv_clamp": conv_clamp},
        conv_clamp=conv_clamp, weight_gain=np.float64(1 / np.sqrt(in_channels)))


def tiny_generator(seed=0, z_dim=4, c_dim=3, w_dim=8, img_resolution=8, img_channels=3, channel_base=64,
                   channel_max=8, mapping_layers=2, conv_clamp=256, block_class="SynthesisBlock"):
    """A G_ema record with the official module tree and channel counts from channel_base/max."""
    gen = torch.Generator().manual_seed(seed)
    resolutions = [2 ** i for i in range(2, int(np.log2(img_resolution)) + 1)]
    channels = {res: min(channel_base // res, channel_max) for res in resolutions}
    blocks, num_ws = OrderedDict(), 0
    for res in resolutions:
        in_ch, out_ch, is_last = (channels[res // 2] if res > 4 else 0), channels[res], res == img_resolution
        modules, params = OrderedDict(), {}
        if in_ch == 0:
            params["const"] = torch.randn(out_ch, res, res, generator=gen)
        else:
            modules["conv0"] = synthesis_layer(gen, in_ch, out_ch, w_dim, res, up=2, conv_clamp=conv_clamp)
        modules["conv1"] = synthesis_layer(gen, out_ch, out_ch, w_dim, res, conv_clamp=conv_clamp)
        modules["torgb"] = to_rgb(gen, out_ch, img_channels, w_dim, conv_clamp=conv_clamp)
        num_conv = 1 + (in_ch != 0)
        num_ws += num_conv + (1 if is_last else 0)
        blocks[f"b{res}"] = RecordedModule(
            block_class, params=params, buffers={"resample_filter": setup_filter()}, modules=modules,
            init_args=(in_ch, out_ch), init_kwargs={"w_dim": w_dim, "resolution": res, "is_last": is_last},
            in_channels=in_ch, w_dim=w_dim, resolution=res, img_channels=img_channels, is_last=is_last,
            architecture="skip", use_fp16=False, channels_last=False, num_conv=num_conv, num_torgb=1)
    synthesis_kwargs = {"channel_base": channel_base, "channel_max": channel_max, "num_fp16_res": 0,
                        "conv_clamp": conv_clamp}
    synthesis = RecordedModule(
        "SynthesisNetwork", modules=blocks,
        init_kwargs={"w_dim": w_dim, "img_resolution": img_resolution, "img_channels": img_channels,
                     **synthesis_kwargs},
        w_dim=w_dim, img_resolution=img_resolution, img_resolution_log2=int(np.log2(img_resolution)),
        img_channels=img_channels, block_resolutions=resolutions, num_ws=num_ws)
    mapping_modules = OrderedDict()
    features = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * mapping_layers
    if c_dim:
        mapping_modules["embed"] = fully_connected(gen, c_dim, w_dim)
    for index in range(mapping_layers):
        mapping_modules[f"fc{index}"] = fully_connected(gen, features[index], features[index + 1],
                                                        activation="lrelu", lr_multiplier=0.01)
    mapping = RecordedModule(
        "MappingNetwork", modules=mapping_modules, buffers={"w_avg": torch.randn(w_dim, generator=gen)},
        init_kwargs={"z_dim": z_dim, "c_dim": c_dim, "w_dim": w_dim, "num_ws": num_ws, "num_layers": mapping_layers},
        z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=num_ws, num_layers=mapping_layers, w_avg_beta=0.995)
    return RecordedModule(
        "Generator", modules={"synthesis": synthesis, "mapping": mapping},
        init_kwargs={"z_dim": z_dim, "c_dim": c_dim, "w_dim": w_dim, "img_resolution": img_resolution,
                     "img_channels": img_channels, "mapping_kwargs": EasyDict(num_layers=mapping_layers),
                     "synthesis_kwargs": EasyDict(synthesis_kwargs)},
        z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
        num_ws=num_ws)


def write_network_pickle(path, g_ema, **extra):
    """A `network-snapshot-*.pkl`-like dict: G_ema (and G), training kwargs, anything extra."""
    data = {"G": g_ema, "D": None, "G_ema": g_ema, "augment_pipe": None,
            "training_set_kwargs": EasyDict(resolution=g_ema.state.get("img_resolution"), use_labels=True), **extra}
    with official_globals(), open(path, "wb") as handle:
        pickle.dump(data, handle, protocol=3)  # the default of the Python 3.7 that wrote them
    return path
