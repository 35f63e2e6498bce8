"""A small class-conditional GAN trained inside the pipeline: a second family of generators,
weaker than the DDPM, so that the generator ranking (paper Table 6, in small) has a spread.

DCGAN-style generator conditioned by a class embedding, projection discriminator (Miyato &
Koyama 2018), hinge loss, Adam(0.5, 0.999). Images live in [0, 1]; sizes divisible by 4.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .artifacts import ImageWriter, load_torch, provenance, read_image_set, save_torch
from .errors import ArtifactError, TrainingDiverged
from .devices import default_device
from .loaders import to_tensor
from .seeds import derive_seed, rng
from .shards import shard_bounds

log = logging.getLogger(__name__)


class Generator(nn.Module):
    def __init__(self, z_dim: int, num_classes: int, channels: int, image_size: int, width: int):
        super().__init__()
        if image_size % 4:
            raise ArtifactError(f"the GAN needs an image size divisible by 4, got {image_size}")
        self.base = image_size // 4
        self.width = width
        self.embed = nn.Embedding(num_classes, z_dim)
        self.fc = nn.Linear(2 * z_dim, 2 * width * self.base ** 2)
        self.net = nn.Sequential(
            nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True), nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2), nn.Conv2d(width, channels, 3, padding=1), nn.Sigmoid())

    def forward(self, z, y):
        h = self.fc(torch.cat([z, self.embed(y)], 1)).view(len(z), 2 * self.width, self.base, self.base)
        return self.net(h)


class Critic(nn.Module):
    """Projection discriminator: unconditional score + <class embedding, features>."""

    def __init__(self, num_classes: int, channels: int, width: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(2 * width, 1)
        self.embed = nn.Embedding(num_classes, 2 * width)

    def forward(self, x, y):
        h = self.features(x * 2 - 1)
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


def train_gan(*, train_path, out_path, settings: dict, seed: int, progress: bool = True) -> None:
    """Train on the real training images and labels; save the generator's spec and weights."""
    images, labels = read_image_set(train_path)
    num_classes = int(labels.max()) + 1
    spec = dict(z_dim=int(settings["z_dim"]), num_classes=num_classes, channels=int(images.shape[-1]),
                image_size=int(images.shape[1]), width=int(settings["width"]))
    device = default_device()
    torch.manual_seed(derive_seed(seed, "gan-init"))
    generator = Generator(**spec).to(device)
    critic = Critic(num_classes, spec["channels"], spec["width"]).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=settings["lr"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), lr=settings["lr"], betas=(0.5, 0.999))
    x_all, y_all = to_tensor(images).to(device), torch.from_numpy(labels).to(device)
    batches = rng(seed, "gan-batches")
    noise = torch.Generator().manual_seed(derive_seed(seed, "gan-noise"))
    batch = settings["batch_size"]
    for step in tqdm(range(settings["steps"]), desc="train gan", disable=not progress, mininterval=10):
        index = torch.from_numpy(batches.integers(0, len(x_all), batch)).to(device)
        x_real, y = x_all[index], y_all[index]
        z = torch.randn(batch, spec["z_dim"], generator=noise).to(device)
        x_fake = generator(z, y)
        loss_d = F.relu(1 - critic(x_real, y)).mean() + F.relu(1 + critic(x_fake.detach(), y)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = -critic(x_fake, y).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
            raise TrainingDiverged(f"GAN training diverged at step {step}: losses {loss_d.item()}, {loss_g.item()}")
        if step % 500 == 0:
            log.info("gan step %d: critic %.4f, generator %.4f", step, loss_d.item(), loss_g.item())
    save_torch({"spec": spec, "state_dict": generator.cpu().state_dict()}, out_path)


def load_generator(path) -> tuple[Generator, dict]:
    """The generator in eval mode and its spec (z_dim, num_classes, channels, image_size, width)."""
    saved = load_torch(path)
    if not isinstance(saved, dict) or "state_dict" not in saved or "z_dim" not in saved.get("spec", {}):
        raise ArtifactError(f"{path}: not a port-pipeline GAN generator checkpoint")
    generator = Generator(**saved["spec"])
    generator.load_state_dict(saved["state_dict"])
    return generator.eval(), saved["spec"]


def sample_gan_shard(model_path, out_path, shard: int, settings: dict, seed: int, dataset: str | None = None,
                     progress: bool = True) -> None:
    """One shard of GAN samples. Image i has class i mod num_classes and noise seeded by
    (seed, i), so images do not depend on the shard count or batch size."""
    start, stop = shard_bounds(settings["n_images"], settings["n_shards"], shard)
    generator, spec = load_generator(model_path)
    device = default_device()
    generator.to(device)
    attrs = provenance("sample", settings, seed, shard=shard, image_offset=start, image_stop=stop,
                       model=str(model_path), dataset=dataset)
    with ImageWriter(out_path, (spec["image_size"], spec["image_size"], spec["channels"]), attrs) as writer:
        for offset in tqdm(range(start, stop, settings["batch_size"]), desc=f"sample shard {shard}",
                           disable=not progress, mininterval=10):
            index = np.arange(offset, min(offset + settings["batch_size"], stop))
            z = torch.stack([torch.randn(spec["z_dim"], generator=torch.Generator().manual_seed(
                derive_seed(seed, "sample", int(i)))) for i in index])
            y = torch.from_numpy(index % spec["num_classes"])
            with torch.inference_mode():
                x = generator(z.to(device), y.to(device))
            images = np.clip(np.rint(x.permute(0, 2, 3, 1).cpu().numpy() * 255), 0, 255).astype(np.uint8)
            writer.append(images, source_labels=y.numpy())
