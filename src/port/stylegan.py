"""StyleGAN2-ADA generators from official network pickles, in plain PyTorch (no custom CUDA ops).

The math follows Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (2020)
and "Training Generative Adversarial Networks with Limited Data" (2020):
- mapping: z and the class embedding are each normalized to unit second moment, concatenated
  and passed through fully connected lrelu layers with equalized learning rate (the weight is
  scaled by lr_multiplier / sqrt(fan_in) at run time); truncation lerps w toward the tracked w_avg;
- synthesis: a learned 4x4 constant, then per resolution a 2x up-sampling modulated 3x3
  convolution and a plain one. Modulation scales the weight's input channels by the style
  (an affine map of w); demodulation rescales each output channel to unit norm. Per-pixel noise
  (a fixed `noise_const` buffer or fresh Gaussian noise) is scaled by a learned strength and added
  before the bias and the sqrt(2)-gain leaky ReLU (clamped at `conv_clamp`). Up-sampling is a
  stride-2 transposed convolution followed by the recorded FIR low-pass filter (`resample_filter`,
  [1,3,3,1] normalized), and the `skip` architecture sums each resolution's toRGB output onto the
  FIR-up-sampled image of the previous one.

The generator is built from the pickle's recorded hyperparameters (init kwargs with the official
defaults), first on the meta device (no memory, whatever sizes the record claims), and every
parameter and buffer of `G_ema` must fit it with the expected shape: nothing is left over and
nothing is missing. Only then are the recorded tensors loaded into it.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import urlopen
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .artifacts import SOURCE_LABELS, ImageWriter, atomic_path, provenance
from .errors import ArtifactError
from .compute import fast_path
from .devices import default_device
from .safe_pickle import PersistentRecord, load_network_pickle
from .seeds import derive_seed
from .shards import shard_bounds

NOISE_MODES = ("const", "random")
ACTIVATION_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0)}
LRELU_SLOPE = 0.2
STYLEGAN3_CLASSES = {"SynthesisInput"}


class StyleGANError(ArtifactError):
    """A network pickle this generator cannot reproduce exactly."""


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def bias_act(x, bias, activation: str, gain: float, clamp: float | None):
    """Add the per-channel bias, apply the activation, scale by gain, clamp to +-clamp."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def fir_filter(x, f, pad: tuple[int, int, int, int], gain: float):
    """Pad (negative = crop) then convolve every channel with the 2-D (or separable 1-D) filter f."""
    x = F.pad(x, list(pad))
    channels = x.shape[1]
    f = f.to(x.dtype)
    if f.ndim == 2:
        kernel = (f * gain).flip([0, 1])[None, None].repeat(channels, 1, 1, 1)
        return F.conv2d(x, kernel, groups=channels)
    taps = (f * math.sqrt(gain)).flip([0])
    x = F.conv2d(x, taps[None, None, None, :].repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(x, taps[None, None, :, None].repeat(channels, 1, 1, 1), groups=channels)


def upsample2d(x, f, up: int = 2):
    """Zero-insert by `up`, then low-pass with f (gain up**2 keeps the mean)."""
    n, c, h, w = x.shape
    x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    size = f.shape[-1]
    lo, hi = (size + up - 1) // 2, (size - up) // 2
    return fir_filter(x, f, (lo, hi, lo, hi), gain=up * up)


def modulated_conv2d(x, weight, styles, demodulate: bool = True, up: int = 1, padding: int = 0,
                     resample_filter=None):
    """Per-sample convolution with input channels scaled by `styles` (and output channels
    renormalized when demodulating), as one grouped convolution over the batch."""
    batch, in_channels = x.shape[:2]
    out_channels, _, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(batch, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.to(x.dtype)
    if up == 1:
        x = F.conv2d(x, w.reshape(-1, in_channels, kh, kw), padding=padding, groups=batch)
        return x.reshape(batch, -1, *x.shape[2:])
    # stride-up transposed convolution, then the FIR filter over the zero-stuffed grid
    size = resample_filter.shape[-1]
    pad0 = padding + (size + up - 1) // 2 - (kw - 1)
    pad1 = padding + (size - up) // 2 - (kw - up)
    inner = max(min(-pad0, -pad1), 0)
    w = w.reshape(batch, out_channels, in_channels, kh, kw).transpose(1, 2).reshape(-1, out_channels, kh, kw)
    x = F.conv_transpose2d(x, w, stride=up, padding=inner, groups=batch)
    x = fir_filter(x, resample_filter, (pad0 + inner, pad1 + inner, pad0 + inner, pad1 + inner), gain=up * up)
    return x.reshape(batch, -1, *x.shape[2:])


# --------------------------------------------------------------------------- recorded attributes


def _attr(record: PersistentRecord, name: str, default=None, required: bool = True):
    if name in record.state:
        return record.state[name]
    if required and default is None:
        raise StyleGANError(f"{record.class_name}: recorded state has no attribute '{name}'")
    return default


def _count(record: PersistentRecord, name: str, value, minimum: int = 1) -> int:
    """A recorded size (a dimension, channel or layer count) as an int: a negative, fractional
    or non-numeric one would fail deep inside torch instead of naming the field."""
    whole = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    if not whole or value < minimum:
        raise StyleGANError(f"{record.class_name}: recorded {name} {value!r} is not a whole number >= {minimum}")
    return int(value)


def _buffer(record: PersistentRecord, name: str) -> torch.Tensor:
    buffer = record.buffers.get(name)
    if not isinstance(buffer, torch.Tensor):
        raise StyleGANError(f"{record.class_name}: recorded state has no buffer '{name}'")
    return buffer


def _activation(record: PersistentRecord) -> str:
    activation = _attr(record, "activation")
    if activation not in ACTIVATION_GAIN:
        raise StyleGANError(f"{record.class_name}: activation '{activation}' is not supported "
                            f"(known: {', '.join(ACTIVATION_GAIN)})")
    return activation


def _child(record: PersistentRecord, name: str, class_name: str) -> PersistentRecord:
    child = record.modules.get(name)
    if not isinstance(child, PersistentRecord) or child.class_name != class_name:
        found = child.class_name if isinstance(child, PersistentRecord) else type(child).__name__
        raise StyleGANError(f"{record.class_name}.{name}: expected a recorded {class_name}, found {found}")
    return child


def _empty(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape), requires_grad=False)


# --------------------------------------------------------------------------- layers


class FullyConnected(nn.Module):
    def __init__(self, record: PersistentRecord, in_features: int, out_features: int):
        super().__init__()
        self.activation = _activation(record)
        self.weight_gain = float(_attr(record, "weight_gain"))
        self.bias_gain = float(_attr(record, "bias_gain"))
        self.weight = _empty(out_features, in_features)
        self.bias = _empty(out_features) if "bias" in record.parameters else None

    def forward(self, x):
        x = x.matmul((self.weight.to(x.dtype) * self.weight_gain).t())
        bias = self.bias * self.bias_gain if self.bias is not None else None
        return bias_act(x, bias, self.activation, ACTIVATION_GAIN[self.activation], None)


class MappingNetwork(nn.Module):
    def __init__(self, record: PersistentRecord, z_dim: int, c_dim: int, w_dim: int):
        super().__init__()
        kwargs = record.init_kwargs
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_layers = _count(record, "num_layers", _attr(record, "num_layers"))
        if self.num_layers > len(record.modules):  # before a list of that many layer widths is made
            raise StyleGANError(f"MappingNetwork: recorded num_layers {self.num_layers}, but the record holds "
                                f"{len(record.modules)} modules")
        embed = 0 if c_dim == 0 else _count(record, "embed_features", kwargs.get("embed_features") or w_dim)
        hidden = _count(record, "layer_features", kwargs.get("layer_features") or w_dim)
        features = [z_dim + embed] + [hidden] * (self.num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnected(_child(record, "embed", "FullyConnectedLayer"), c_dim, embed)
        for index in range(self.num_layers):
            layer = _child(record, f"fc{index}", "FullyConnectedLayer")
            setattr(self, f"fc{index}", FullyConnected(layer, features[index], features[index + 1]))
        self.register_buffer("w_avg", torch.empty(w_dim) if "w_avg" in record.buffers else None)

    def forward(self, z, c):
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim > 0:
            parts.append(normalize_2nd_moment(self.embed(c.float())))
        x = torch.cat(parts, dim=1)
        for index in range(self.num_layers):
            x = getattr(self, f"fc{index}")(x)
        return x


class SynthesisLayer(nn.Module):
    def __init__(self, record: PersistentRecord, in_channels: int, out_channels: int, w_dim: int,
                 resolution: int, up: int, kernel_size: int):
        super().__init__()
        self.resolution, self.up = resolution, up
        if int(_attr(record, "up")) != up or int(_attr(record, "resolution")) != resolution:
            raise StyleGANError(f"{record.class_name}: recorded up/resolution {record.state.get('up')}/"
                                f"{record.state.get('resolution')}, expected {up}/{resolution}")
        self.activation = _activation(record)
        self.act_gain = float(_attr(record, "act_gain"))
        self.conv_clamp = _attr(record, "conv_clamp", required=False)
        self.padding = _count(record, "padding", _attr(record, "padding"), minimum=0)
        self.use_noise = bool(_attr(record, "use_noise"))
        self.affine = FullyConnected(_child(record, "affine", "FullyConnectedLayer"), w_dim, in_channels)
        self.weight = _empty(out_channels, in_channels, kernel_size, kernel_size)
        self.bias = _empty(out_channels)
        self.register_buffer("resample_filter", torch.empty(_buffer(record, "resample_filter").shape))
        if self.use_noise:
            self.register_buffer("noise_const", torch.empty(resolution, resolution))
            self.noise_strength = _empty()

    def forward(self, x, w, noise=None):
        """noise: [N, 1, res, res] standard normal (noise_mode random) or None for the recorded const."""
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter)
        if self.use_noise:
            x = x + (self.noise_const if noise is None else noise).to(x.dtype) * self.noise_strength.to(x.dtype)
        return bias_act(x, self.bias, self.activation, self.act_gain, self.conv_clamp)


class ToRGB(nn.Module):
    def __init__(self, record: PersistentRecord, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.weight_gain = float(_attr(record, "weight_gain"))
        self.conv_clamp = _attr(record, "conv_clamp", required=False)
        self.affine = FullyConnected(_child(record, "affine", "FullyConnectedLayer"), w_dim, in_channels)
        self.weight = _empty(out_channels, in_channels, 1, 1)
        self.bias = _empty(out_channels)

    def forward(self, x, w):
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return bias_act(x, self.bias, "linear", 1.0, self.conv_clamp)


class SynthesisBlock(nn.Module):
    def __init__(self, record: PersistentRecord, in_channels: int, out_channels: int, w_dim: int,
                 resolution: int, img_channels: int, is_last: bool, kernel_size: int):
        super().__init__()
        self.architecture = _attr(record, "architecture")
        if self.architecture not in ("orig", "skip"):
            raise StyleGANError(f"SynthesisBlock b{resolution}: architecture '{self.architecture}' is not supported "
                                "(the official generators use 'skip'; 'orig' also works)")
        self.in_channels, self.resolution, self.is_last = in_channels, resolution, is_last
        self.register_buffer("resample_filter", torch.empty(_buffer(record, "resample_filter").shape))
        if in_channels == 0:
            self.const = _empty(out_channels, resolution, resolution)
        else:
            self.conv0 = SynthesisLayer(_child(record, "conv0", "SynthesisLayer"), in_channels, out_channels, w_dim,
                                        resolution, up=2, kernel_size=kernel_size)
        self.conv1 = SynthesisLayer(_child(record, "conv1", "SynthesisLayer"), out_channels, out_channels, w_dim,
                                    resolution, up=1, kernel_size=kernel_size)
        self.num_conv = 1 + (in_channels != 0)
        self.num_torgb = int(is_last or self.architecture == "skip")
        if self.num_torgb:
            self.torgb = ToRGB(_child(record, "torgb", "ToRGBLayer"), out_channels, img_channels, w_dim)

    def layers(self) -> list[SynthesisLayer]:
        return ([self.conv0] if self.in_channels else []) + [self.conv1]

    def forward(self, x, img, ws, noises):
        if self.in_channels == 0:
            x = self.const.to(ws.dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        for index, layer in enumerate(self.layers()):
            x = layer(x, ws[:, index], noises.pop(0) if noises else None)
        if img is not None:  # the image path stays float32, as in the official mixed-precision blocks
            with torch.autocast(img.device.type, enabled=False):
                img = upsample2d(img.float(), self.resample_filter)
        if self.num_torgb:
            y = self.torgb(x, ws[:, self.num_conv]).float()
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, record: PersistentRecord, w_dim: int, img_resolution: int, img_channels: int):
        super().__init__()
        kwargs = record.init_kwargs
        base, top, kernel_size = (_count(record, key, kwargs.get(key, default))
                                  for key, default in (("channel_base", 32768), ("channel_max", 512), ("kernel_size", 3)))
        self.block_resolutions = [2 ** i for i in range(2, img_resolution.bit_length())]
        missing = [f"b{res}" for res in self.block_resolutions if f"b{res}" not in record.modules]
        if missing:
            raise StyleGANError(f"SynthesisNetwork: img_resolution {img_resolution} needs one block per resolution "
                                f"from b4 to b{img_resolution}; the record has no {', '.join(missing[:3])}"
                                f"{' ...' if len(missing) > 3 else ''}")
        channels = {res: min(base // res, top) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(_child(record, f"b{res}", "SynthesisBlock"), channels[res // 2] if res > 4 else 0,
                                   channels[res], w_dim, res, img_channels, res == img_resolution, kernel_size)
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv + (block.num_torgb if res == img_resolution else 0)

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def noise_resolutions(self) -> list[int]:
        """Resolution of each noise input, in the order the layers consume them."""
        return [layer.resolution for block in self.blocks() for layer in block.layers() if layer.use_noise]

    def forward(self, ws, noises: list | None = None):
        noises = list(noises) if noises is not None else None
        x = img = None
        index = 0
        for block in self.blocks():
            x, img = block(x, img, ws[:, index:index + block.num_conv + block.num_torgb], noises)
            index += block.num_conv
        return img


class StyleGAN2Generator(nn.Module):
    """The official G_ema's computation: z, one-hot c -> image in about [-1, 1], NCHW."""

    def __init__(self, record: PersistentRecord):
        super().__init__()
        if record.class_name != "Generator":
            raise StyleGANError(f"G_ema is a recorded {record.class_name}, expected Generator")
        synthesis = _child(record, "synthesis", "SynthesisNetwork")
        refuse_stylegan3(synthesis)
        self.z_dim, self.c_dim, self.w_dim = (_count(record, key, _attr(record, key), minimum)
                                              for key, minimum in (("z_dim", 0), ("c_dim", 0), ("w_dim", 1)))
        self.img_resolution = _count(record, "img_resolution", _attr(record, "img_resolution"), minimum=4)
        if self.img_resolution & (self.img_resolution - 1):
            raise StyleGANError(f"Generator: recorded img_resolution {self.img_resolution} is not a power of two")
        self.img_channels = _count(record, "img_channels", _attr(record, "img_channels"))
        self.synthesis = SynthesisNetwork(synthesis, self.w_dim, self.img_resolution, self.img_channels)
        self.num_ws = self.synthesis.num_ws
        if int(record.state.get("num_ws", self.num_ws)) != self.num_ws:
            raise StyleGANError(f"Generator records {record.state['num_ws']} ws, the synthesis network uses "
                                f"{self.num_ws}")
        self.mapping = MappingNetwork(_child(record, "mapping", "MappingNetwork"), self.z_dim, self.c_dim, self.w_dim)

    def forward(self, z, c, truncation_psi: float = 1.0, noises: list | None = None):
        w = self.mapping(z, c)
        if truncation_psi != 1:
            if self.mapping.w_avg is None:
                raise StyleGANError("truncation needs the mapping network's w_avg, which this pickle lacks")
            w = self.mapping.w_avg.lerp(w.float(), truncation_psi)
        return self.synthesis(w.unsqueeze(1).expand(-1, self.num_ws, -1), noises)


def refuse_stylegan3(synthesis: PersistentRecord) -> None:
    children = {child.class_name for child in synthesis.modules.values() if isinstance(child, PersistentRecord)}
    if children & STYLEGAN3_CLASSES or "class SynthesisInput" in synthesis.module_src:
        raise StyleGANError("a StyleGAN3 pickle (networks_stylegan3 SynthesisNetwork with SynthesisInput and "
                            "alias-free layers): only StyleGAN2/StyleGAN2-ADA generators are supported")


def check_tensors(model: nn.Module, tensors: dict) -> None:
    """Every recorded tensor fits the model: same names, same shapes, none left over or missing."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise StyleGANError(f"G_ema tensors do not match a StyleGAN2 generator (missing: {missing[:5]}, "
                            f"unused: {extra[:5]})")
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise StyleGANError(f"G_ema.{name} is a recorded {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(expected[name].shape):
            raise StyleGANError(f"G_ema.{name} has shape {tuple(value.shape)}, expected {tuple(expected[name].shape)}")


def network_file(model: str, cache_dir=None) -> Path:
    """A local pickle path as given; a URL (https, file) fetched once into the cache. Parallel
    shard jobs may fetch at once: each writes its own temporary file and renames it into place."""
    if "://" not in str(model):
        return Path(model)
    cache = Path(cache_dir or os.environ.get("PORT_CACHE", "~/.cache/port-pipeline")).expanduser() / "stylegan"
    target = cache / f"{hashlib.sha256(model.encode()).hexdigest()[:16]}-{Path(urlparse(model).path).name}"
    if not target.is_file():
        try:
            with urlopen(model) as response, atomic_path(target) as tmp, open(tmp, "wb") as handle:
                shutil.copyfileobj(response, handle)
        except OSError as err:
            raise StyleGANError(f"{model}: cannot fetch the network pickle ({err})") from err
    return target


def recorded_generator(path) -> tuple[StyleGAN2Generator, dict]:
    """G_ema of a network pickle, built on the meta device and checked against its recorded
    tensors, with those tensors: a malformed record (a missing field, a negative or absurd size,
    tensors of other shapes) is one StyleGANError naming the file, before any memory is allocated."""
    data = load_network_pickle(path)
    record = data.get("G_ema")
    if not isinstance(record, PersistentRecord):
        raise StyleGANError(f"{path}: no recorded G_ema network (keys: {', '.join(map(str, data))})")
    try:
        with torch.device("meta"):
            generator = StyleGAN2Generator(record)
        tensors = record.tensors()
        check_tensors(generator, tensors)
    except StyleGANError as err:
        raise StyleGANError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:  # state of another layout
        raise StyleGANError(f"{path}: malformed G_ema record ({type(err).__name__}: {err})") from None
    return generator, tensors


def load_stylegan(path) -> StyleGAN2Generator:
    """G_ema of an official StyleGAN2-ADA network pickle (path or URL), in eval mode on the CPU."""
    generator, tensors = recorded_generator(network_file(str(path)))
    generator.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True, assign=True)
    return generator.eval()


def recorded_output(path) -> tuple[int, tuple[int, int, int]]:
    """The classes (0: unconditional) and the H x W x C images that G_ema of a local network
    pickle makes, from its checked record (no weights loaded), so that a malformed pickle or
    one that does not fit the dataset is refused before any shard is sampled."""
    generator, _ = recorded_generator(path)
    return generator.c_dim, (generator.img_resolution, generator.img_resolution, generator.img_channels)


def image_labels(indices: np.ndarray, num_classes: int, class_labels: list[int] | None) -> np.ndarray:
    """Balanced classes: image i gets class i mod C, or class_labels[i mod len] when configured."""
    if class_labels:
        bad = [c for c in class_labels if not 0 <= c < num_classes]
        if bad:
            raise StyleGANError(f"class_labels {bad} out of range for a generator with {num_classes} classes")
        return np.asarray(class_labels, dtype=np.int64)[indices % len(class_labels)]
    return (indices % num_classes).astype(np.int64)


def image_inputs(generator: StyleGAN2Generator, indices, seed: int, noise_mode: str):
    """z and (noise_mode random) per-layer noise of each image, from a generator seeded by (seed, index)."""
    resolutions = generator.synthesis.noise_resolutions()
    zs, noises = [], [[] for _ in resolutions]
    for index in indices:
        stream = torch.Generator().manual_seed(derive_seed(seed, "sample", int(index)))
        zs.append(torch.randn(generator.z_dim, generator=stream))
        if noise_mode == "random":
            for layer, res in enumerate(resolutions):
                noises[layer].append(torch.randn(1, res, res, generator=stream))
    return torch.stack(zs), ([torch.stack(n) for n in noises] if noise_mode == "random" else None)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW float -> uint8 NHWC (as the official generate.py, rounded)."""
    return np.clip(np.rint(images.float().permute(0, 2, 3, 1).cpu().numpy() * 127.5 + 127.5), 0, 255).astype(np.uint8)


def generate(generator: StyleGAN2Generator, indices: np.ndarray, seed: int, truncation_psi: float = 1.0,
             noise_mode: str = "const", class_labels: list[int] | None = None):
    """uint8 NHWC images and their classes (None when unconditional) for the given global indices."""
    if noise_mode not in NOISE_MODES:
        raise StyleGANError(f"noise_mode '{noise_mode}' (known: {', '.join(NOISE_MODES)})")
    device = next(generator.parameters()).device
    z, noises = image_inputs(generator, indices, seed, noise_mode)
    labels = image_labels(indices, generator.c_dim, class_labels) if generator.c_dim else None
    c = (F.one_hot(torch.from_numpy(labels), generator.c_dim).float() if labels is not None
         else torch.zeros(len(indices), 0))
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast_path(device)):
        images = generator(z.to(device), c.to(device), truncation_psi,
                           [n.to(device) for n in noises] if noises is not None else None)
    return to_uint8(images), labels


def sample_stylegan_shard(model_path, out_path, shard: int, settings: dict, seed: int, dataset: str | None = None,
                          progress: bool = True) -> None:
    """One shard of StyleGAN2 samples; image i depends only on (seed, i), not on shards or batches."""
    start, stop = shard_bounds(settings["n_images"], settings["n_shards"], shard)
    generator = load_stylegan(model_path).to(default_device())
    shape = (generator.img_resolution, generator.img_resolution, generator.img_channels)
    attrs = provenance("sample", settings, seed, shard=shard, image_offset=start, image_stop=stop,
                       model=str(model_path), dataset=dataset)
    with ImageWriter(out_path, shape, attrs) as writer:
        for offset in tqdm(range(start, stop, settings["batch_size"]), desc=f"sample shard {shard}",
                           disable=not progress, mininterval=10):
            indices = np.arange(offset, min(offset + settings["batch_size"], stop))
            images, labels = generate(generator, indices, seed, settings.get("truncation_psi", 1.0),
                                      settings.get("noise_mode", "const"), settings.get("class_labels"))
            writer.append(images, **({SOURCE_LABELS: labels} if labels is not None else {}))
