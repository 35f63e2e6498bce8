"""Synthetic images from generative models: diffusers DDPMs, trained here or pretrained,
sampled in independently seeded shards; or a pre-sampled set imported from npz.

A trained model is saved with `DDPMPipeline.save_pretrained`, so the digits DDPM and
`google/ddpm-cifar10-32` load through the same `from_pretrained` code path.
"""

from __future__ import annotations

import copy
import glob
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .artifacts import (MODEL_DIRECTORY_MARKER, ArtifactError, ImageWriter, dataset_of, image_set_shape,
                        iter_image_blocks, provenance, read_attrs, read_image_set, validate_image_set)
from .data import check_same_geometry, load_npz_images
from .loaders import to_tensor
from .models import default_device
from .seeds import derive_seed, rng
from .shards import shard_bounds

log = logging.getLogger(__name__)
SCHEDULERS = ("ddpm", "ddim")


def _unet_config(settings: dict, image_size: int, channels: int) -> dict:
    widths = tuple(settings["block_out_channels"])
    attention = set(settings.get("attention_levels", [len(widths) - 1]))
    down = tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(len(widths)))
    up = tuple(name.replace("Down", "Up") for name in reversed(down))
    return dict(sample_size=image_size, in_channels=channels, out_channels=channels, block_out_channels=widths,
                layers_per_block=settings.get("layers_per_block", 1), down_block_types=down,
                up_block_types=up, norm_num_groups=settings.get("norm_num_groups", 8))


def train_ddpm(train_path, out_dir, settings: dict, seed: int, progress: bool = True) -> None:
    """Train an unconditional DDPM (UNet2DModel, EMA weights) on the real training images."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    images, _ = read_image_set(train_path)
    device = default_device()
    x_all = (to_tensor(images).contiguous() * 2 - 1).to(device)
    torch.manual_seed(derive_seed(seed, "ddpm-init"))
    unet = UNet2DModel(**_unet_config(settings, images.shape[1], images.shape[-1])).to(device)
    scheduler = DDPMScheduler(num_train_timesteps=settings.get("train_timesteps", 1000),
                              beta_schedule=settings.get("beta_schedule", "linear"))
    ema = EMAModel(unet.parameters(), decay=settings.get("ema_decay", 0.999))
    optimizer = torch.optim.AdamW(unet.parameters(), lr=settings["lr"], weight_decay=0.0)
    steps, batch = settings["steps"], settings["batch_size"]
    lr_at = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / settings.get("warmup", 200)))
    generator = rng(seed, "ddpm-batches")
    noise_gen = torch.Generator().manual_seed(derive_seed(seed, "ddpm-noise"))
    unet.train()
    for step in tqdm(range(steps), desc="train ddpm", disable=not progress, mininterval=10):
        x0 = x_all[torch.from_numpy(generator.integers(0, len(x_all), batch)).to(device)]
        if settings.get("flip", False):
            flip = (torch.rand(batch, 1, 1, 1, generator=noise_gen) < 0.5).to(device)
            x0 = torch.where(flip, x0.flip(3), x0)
        noise = torch.randn(x0.shape, generator=noise_gen).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=noise_gen).to(device)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        lr_at.step()
        ema.step(unet.parameters())
        if step % 500 == 0:
            log.info("ddpm step %d loss %.4f", step, loss.item())
    ema_unet = copy.deepcopy(unet)
    ema.copy_to(ema_unet.parameters())
    save_pipeline(DDPMPipeline(unet=ema_unet.eval().cpu(), scheduler=scheduler), out_dir)


def save_pipeline(pipeline, out_dir) -> None:
    """save_pretrained into a temporary directory, then rename it into place."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        pipeline.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def load_pipeline(model: str, scheduler: str = "ddim"):
    """A DDPM/DDIM sampling pipeline from a hub id or a `save_pretrained` directory."""
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler

    if scheduler not in SCHEDULERS:
        raise ArtifactError(f"unknown scheduler '{scheduler}' (known: {', '.join(SCHEDULERS)})")
    local = Path(model)
    if local.exists() and not (local / MODEL_DIRECTORY_MARKER).is_file():
        raise ArtifactError(f"{model}: not a diffusers model directory (no {MODEL_DIRECTORY_MARKER})")
    try:
        base = DDPMPipeline.from_pretrained(model)
    except (OSError, ValueError, EnvironmentError) as err:
        raise ArtifactError(f"{model}: cannot load a diffusers DDPM pipeline ({err})") from err
    if scheduler == "ddim":
        return DDIMPipeline(unet=base.unet, scheduler=DDIMScheduler.from_config(base.scheduler.config))
    return DDPMPipeline(unet=base.unet, scheduler=DDPMScheduler.from_config(base.scheduler.config))


def sample_shard(model: str, out_path, shard: int, settings: dict, seed: int, progress: bool = True,
                 dataset: str | None = None) -> None:
    """Sample one shard. Every image has its own noise generator, seeded from (seed, global image
    index), so the images do not depend on the shard count, the batch size or which job ran."""
    start, stop = shard_bounds(settings["n_images"], settings["n_shards"], shard)
    pipeline = load_pipeline(model, settings["scheduler"]).to(default_device())
    pipeline.set_progress_bar_config(disable=True)
    unet_cfg = pipeline.unet.config
    shape = (unet_cfg.sample_size, unet_cfg.sample_size, unet_cfg.in_channels)
    out_size = settings.get("image_size") or unet_cfg.sample_size
    batch = settings["batch_size"]
    attrs = provenance("sample", settings, seed, shard=shard, image_offset=start, image_stop=stop, model=str(model),
                       dataset=dataset)
    kwargs = {"eta": settings.get("eta", 0.0)} if settings["scheduler"] == "ddim" else {}
    with ImageWriter(out_path, (out_size, out_size, shape[2]), attrs) as writer:
        for offset in tqdm(range(start, stop, batch), desc=f"sample shard {shard}", disable=not progress,
                           mininterval=10):
            count = min(batch, stop - offset)
            generator = [torch.Generator().manual_seed(derive_seed(seed, "sample", index))
                         for index in range(offset, offset + count)]
            with torch.inference_mode():
                result = pipeline(batch_size=count, generator=generator, num_inference_steps=settings["steps"],
                                  output_type="np", **kwargs).images
            images = np.clip(np.rint(np.asarray(result) * 255.0), 0, 255).astype(np.uint8)
            if images.ndim == 3:
                images = images[..., None]
            if out_size != shape[0]:
                images = resize_images(images, out_size)
            writer.append(images)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Area-resize uint8 NHWC images (used when a generator samples at another resolution)."""
    x = to_tensor(images)
    y = F.interpolate(x, size=(size, size), mode="area" if size < x.shape[-1] else "bilinear")
    return np.clip(np.rint(y.permute(0, 2, 3, 1).numpy() * 255), 0, 255).astype(np.uint8)


def merge_shards(shard_paths, out_path) -> int:
    """Concatenate shard files in shard order into one chunked image set."""
    shard_paths = [Path(p) for p in shard_paths]
    offsets = {}
    for path in shard_paths:
        validate_image_set(path, require_labels=False)
        offsets[path] = read_attrs(path).get("image_offset")
    # the image shape from the first shard holding images (shards may be empty when n_shards > n_images)
    first = next((block for path in shard_paths for _, block in iter_image_blocks(path, block=1)), None)
    if first is None:
        raise ArtifactError(f"{shard_paths[0]}: no images in any of the {len(shard_paths)} shard(s)")
    for path in shard_paths:  # name the shard that does not fit, not the output
        validate_image_set(path, require_labels=False, image_shape=first.shape[1:])
    attrs = provenance("merge", {"shards": [str(p) for p in shard_paths]}, dataset=dataset_of(shard_paths[0]))
    with ImageWriter(out_path, first.shape[1:], attrs) as writer:
        for path in shard_paths:
            if offsets[path] is not None and int(offsets[path]) != writer.count:
                raise ArtifactError(f"{path}: starts at image {offsets[path]}, expected {writer.count}")
            for _, block in iter_image_blocks(path):
                writer.append(block)
        return writer.count


def import_npz_shard(npz_path, out_path, shard: int, settings: dict, seed: int, dataset: str | None = None,
                     reference=None) -> None:
    """One shard of a pre-sampled set (key `image`, optional `label`, as the public sets ship);
    its images must have the geometry of the `reference` image set (the real training set)."""
    images, labels = load_npz_images(npz_path, settings.get("image_key", "image"), settings.get("label_key"))
    if reference is not None:
        check_same_geometry(reference, image_set_shape(reference), npz_path, images.shape)
    n_images = min(settings.get("n_images") or len(images), len(images))
    start, stop = shard_bounds(n_images, settings["n_shards"], shard)
    attrs = provenance("import_npz", settings, seed, shard=shard, image_offset=start, source=str(npz_path),
                       dataset=dataset)
    arrays = {"source_labels": labels[start:stop]} if labels is not None else {}
    with ImageWriter(out_path, images.shape[1:], attrs) as writer:
        writer.append(images[start:stop], **arrays)


def make_shard(source: str, out_path, shard: int, settings: dict, seed: int, dataset: str | None = None,
               reference=None) -> None:
    """Produce one shard of a generator's images, whatever its kind (`reference`: the real image
    set an imported npz set must match)."""
    if settings["kind"] == "diffusers":
        sample_shard(source, out_path, shard, settings, seed, dataset=dataset)
    elif settings["kind"] == "npz":
        import_npz_shard(source, out_path, shard, settings, seed, dataset=dataset, reference=reference)
    elif settings["kind"] == "gan":
        from .gan import sample_gan_shard

        sample_gan_shard(source, out_path, shard, settings, seed, dataset=dataset)
    else:
        raise ArtifactError(f"unknown generator kind '{settings['kind']}' (known: diffusers, gan, npz)")
