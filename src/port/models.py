"""Classifiers: CIFAR ResNet-18, WideResNets (34-10, 28-10; 28-10 and 70-16 with SiLU as
Wang et al. 2023), small nets for digits, and the plain CNN-2/CNN-4 discriminators.

Every model takes images in [0, 1] and normalises internally, so attacks, AutoAttack and
randomized smoothing all work in pixel space. Checkpoints record the architecture and
its shape (input channels, image size, classes), and loading refuses a checkpoint for another
architecture, class count or image geometry: a 3-channel model would otherwise take 1-channel
images silently (Normalize broadcasts), and an adaptive-pool CNN any image size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .artifacts import image_set_shape, load_torch, save_torch, shape_text
from .errors import ArtifactError, SettingsError
from .devices import default_device
from .loaders import to_tensor


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def _conv_bn(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def small_cnn(in_channels: int, num_classes: int, width: int = 16) -> nn.Module:
    """A compact CNN for 8x8 to 32x32 images (the digits default). 16-32-64 channels keep
    AutoAttack on the 450 digits test images under two minutes on one CPU core."""
    return nn.Sequential(
        *_conv_bn(in_channels, width), *_conv_bn(width, width), nn.MaxPool2d(2),
        *_conv_bn(width, 2 * width), *_conv_bn(2 * width, 2 * width), nn.MaxPool2d(2),
        *_conv_bn(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4 * width, num_classes))


def plain_cnn(in_channels: int, num_classes: int, conv_layers: int, width: int = 32) -> nn.Module:
    """CNN-2 / CNN-4 of the paper's non-robust discriminators (Appendix C.1, Table 9): `conv_layers`
    3x3 conv-BN-ReLU layers, max-pooling after every second one, global average pooling and a linear
    head (adaptive pooling fits 8x8 digits and 32x32 CIFAR alike)."""
    layers, cin = [], in_channels
    for i in range(conv_layers):
        cout = width * 2 ** (i // 2)
        layers += _conv_bn(cin, cout)
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


def mlp(in_channels: int, num_classes: int, width: int = 256, image_size: int = 8) -> nn.Module:
    """A fully connected labeler: a different inductive bias from the CNNs."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * image_size * image_size, width), nn.ReLU(inplace=True),
        nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, num_classes))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stem, no max-pool (He et al. 2016, as used by PORT)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        layers, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2 ** i
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = self.layers(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class WideBlock(nn.Module):
    """Pre-activation wide residual block (Zagoruyko & Komodakis 2016)."""

    def __init__(self, cin, cout, stride, activation=F.relu):
        super().__init__()
        self.activation = activation
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        pre = self.activation(self.bn1(x))
        out = self.conv2(self.activation(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-widen; `activation` F.silu gives the WRNs of Gowal et al. (2020) and Wang et al.
    (2023) (their "WideResNet with Swish")."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, widen: int, activation=F.relu):
        super().__init__()
        self.activation = activation
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks, cin = [], widths[0]
        for i, stride in enumerate((1, 2, 2)):
            for j in range(n):
                blocks.append(WideBlock(cin, widths[i + 1], stride if j == 0 else 1, activation))
                cin = widths[i + 1]
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = self.activation(self.bn(self.blocks(self.stem(x))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


ARCHITECTURES = {
    "small_cnn": lambda c, k, s: small_cnn(c, k),
    "mlp": lambda c, k, s: mlp(c, k, image_size=s),
    "cnn2": lambda c, k, s: plain_cnn(c, k, 2),
    "cnn4": lambda c, k, s: plain_cnn(c, k, 4),
    "resnet18": lambda c, k, s: ResNet18(c, k),
    "wrn-28-10": lambda c, k, s: WideResNet(c, k, 28, 10),
    "wrn-34-10": lambda c, k, s: WideResNet(c, k, 34, 10),
    "wrn-28-10-silu": lambda c, k, s: WideResNet(c, k, 28, 10, F.silu),
    "wrn-70-16-silu": lambda c, k, s: WideResNet(c, k, 70, 16, F.silu),
}


def build_model(arch: str, in_channels: int, num_classes: int, image_size: int,
                mean, std) -> nn.Sequential:
    """A classifier taking [0, 1] images: Normalize followed by the named network."""
    if arch not in ARCHITECTURES:
        raise SettingsError(f"unknown architecture '{arch}' (known: {', '.join(sorted(ARCHITECTURES))})")
    net = ARCHITECTURES[arch](in_channels, num_classes, image_size)
    return nn.Sequential(Normalize(mean, std), net).to(memory_format=torch.channels_last)


SPEC_KEYS = ("arch", "in_channels", "num_classes", "image_size", "mean", "std")  # what build_model takes


def model_spec(arch, in_channels, num_classes, image_size, mean, std) -> dict:
    return dict(arch=arch, in_channels=int(in_channels), num_classes=int(num_classes),
                image_size=int(image_size), mean=list(map(float, mean)), std=list(map(float, std)))


def save_model(model: nn.Module, spec: dict, path, **metadata) -> None:
    save_torch({"spec": spec, "state_dict": model.state_dict(), "metadata": metadata}, path)


def training_record(metadata: dict) -> dict:
    """How a saved model was trained, as the summary tables report it: from its own metadata."""
    mixture = {key: metadata[key] for key in ("generator", "generator_shares") if key in metadata}  # mixtures only
    return {"gamma": metadata.get("gamma"), "epochs": metadata.get("epochs"),
            "n_synthetic": metadata.get("n_synthetic", 0), "n_synthetic_used": metadata.get("n_synthetic_used", 0),
            "n_test_duplicates_removed": metadata.get("test_duplicates_removed"), **mixture}


def checkpoint_spec(path) -> tuple[dict, dict]:
    """(checkpoint, spec) of a port-pipeline model checkpoint, without building the model."""
    checkpoint = load_torch(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("spec"), dict) \
            or "state_dict" not in checkpoint:
        raise ArtifactError(f"{path}: not a port-pipeline model checkpoint (no 'spec'/'state_dict'); "
                            f"give a model.pt written by this pipeline (train_labeler or train_robust)")
    spec = checkpoint["spec"]
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise ArtifactError(f"{path}: checkpoint spec lacks {', '.join(missing)}")
    return checkpoint, spec


def check_spec(spec: dict, path, expect_arch: str | None = None, expect_classes: int | None = None,
               image_shape: tuple | None = None, images=None) -> None:
    """Refuse a checkpoint for another architecture, class count or image geometry (H, W, C of `images`)."""
    if expect_arch is not None and spec["arch"] != expect_arch:
        raise ArtifactError(f"{path}: checkpoint is a '{spec['arch']}', config expects '{expect_arch}'")
    if expect_classes is not None and spec["num_classes"] != expect_classes:
        raise ArtifactError(f"{path}: checkpoint has {spec['num_classes']} classes, dataset has {expect_classes}")
    model_shape = (spec["image_size"], spec["image_size"], spec["in_channels"])
    if image_shape is not None and model_shape != tuple(image_shape):
        raise ArtifactError(f"{path}: checkpoint is for {shape_text(model_shape)} images, but {images} "
                            f"holds {shape_text(image_shape)} images")


def load_initial_weights(model: nn.Module, spec: dict, path) -> None:
    """Start `model` (built from `spec`) from the weights saved at `path`; refuse a saved model of
    another spec (architecture, classes, geometry, normalisation): its weights mean something else."""
    checkpoint, saved = checkpoint_spec(path)
    differing = [k for k in SPEC_KEYS if saved[k] != spec[k]]
    if differing:
        raise ArtifactError(f"{path}: initial weights of another model: "
                            + ", ".join(f"{k} {saved[k]} (this run: {spec[k]})" for k in differing))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise ArtifactError(f"{path}: weights do not fit a '{spec['arch']}' ({err})") from err


def load_model(path, expect_arch: str | None = None, expect_classes: int | None = None,
               expect_images=None) -> tuple[nn.Module, dict]:
    """Rebuild a saved classifier in eval mode; refuse a mismatching architecture, class count, or
    image geometry (`expect_images`: the image set the model will see)."""
    checkpoint, spec = checkpoint_spec(path)
    check_spec(spec, path, expect_arch, expect_classes,
               None if expect_images is None else image_set_shape(expect_images), expect_images)
    return model_from_checkpoint(checkpoint, spec, path).eval(), {**spec, "metadata": checkpoint.get("metadata", {})}


def model_from_checkpoint(checkpoint: dict, spec: dict, path) -> nn.Module:
    """The network `spec` describes with the checkpoint's weights; refuses weights of other shapes."""
    model = build_model(**{k: spec[k] for k in SPEC_KEYS})
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise ArtifactError(f"{path}: weights do not fit a '{spec['arch']}' ({str(err).splitlines()[0]})") from err
    return model


def penultimate_features(model: nn.Module, images: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Inputs of the model's last Linear layer (the classifier's feature space)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    captured = []
    handle = last.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    device = default_device()
    model.to(device)
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch):
                model(to_tensor(images[i:i + batch]).to(device))
    finally:
        handle.remove()
    return torch.cat(captured).double().cpu().numpy()
