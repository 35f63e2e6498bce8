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

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .artifacts import (ArtifactError, ImageWriter, check_labels, dataset_of, image_set_length, iter_image_blocks,
                        provenance, read_attrs, read_image_set, validate_image_set)
from .config import SettingsError
from .devices import default_device
from .loaders import to_tensor
from .presampled import PresampledSet
from .seeds import derive_seed, rng
from .shards import shard_bounds

log = logging.getLogger(__name__)
SCHEDULERS = ("ddpm", "ddim")
LABEL_DROPOUT = 0.1  # class-conditional DDPMs: P(label -> "no class") in training, for guidance
GUIDANCE_SCALE = 1.0  # 1.0: plain conditional sampling; > 1 extrapolates away from the unconditional model
SOURCE_LABELS = "source_labels"  # the generator's own class of each image (conditional generators)


def _unet_config(settings: dict, image_size: int, channels: int) -> dict:
    widths = tuple(settings["block_out_channels"])
    attention = set(settings.get("attention_levels", [len(widths) - 1]))
    down = tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in range(len(widths)))
    up = tuple(name.replace("Down", "Up") for name in reversed(down))
    return dict(sample_size=image_size, in_channels=channels, out_channels=channels, block_out_channels=widths,
                layers_per_block=settings.get("layers_per_block", 1), down_block_types=down,
                up_block_types=up, norm_num_groups=settings.get("norm_num_groups", 8))


def train_ddpm(*, train_path, out_dir, settings: dict, seed: int, progress: bool = True) -> None:
    """Train a DDPM (UNet2DModel, EMA weights) on the real training images. With
    `class_conditional`, the UNet embeds the class (one extra embedding is the "no class" of
    classifier-free guidance) and each label is dropped to it with probability `label_dropout`."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    images, labels = read_image_set(train_path)
    device = default_device()
    x_all = (to_tensor(images).contiguous() * 2 - 1).to(device)
    conditional = settings.get("class_conditional", False)
    num_classes = int(read_attrs(train_path)["num_classes"])
    y_all = torch.from_numpy(labels).to(device)
    torch.manual_seed(derive_seed(seed, "ddpm-init"))
    unet = UNet2DModel(**_unet_config(settings, images.shape[1], images.shape[-1]),
                       num_class_embeds=num_classes + 1 if conditional else None).to(device)
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
        index = torch.from_numpy(generator.integers(0, len(x_all), batch)).to(device)
        x0 = x_all[index]
        if settings.get("flip", False):
            flip = (torch.rand(batch, 1, 1, 1, generator=noise_gen) < 0.5).to(device)
            x0 = torch.where(flip, x0.flip(3), x0)
        noise = torch.randn(x0.shape, generator=noise_gen).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=noise_gen).to(device)
        class_labels = None
        if conditional:
            dropped = (torch.rand(batch, generator=noise_gen) < settings.get("label_dropout", LABEL_DROPOUT)).to(device)
            class_labels = torch.where(dropped, num_classes, y_all[index])
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t, class_labels=class_labels).sample, noise)
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
        raise SettingsError(f"unknown scheduler '{scheduler}' (known: {', '.join(SCHEDULERS)})")
    local = Path(model)
    if local.exists() and not (local / "model_index.json").is_file():
        raise ArtifactError(f"{model}: not a diffusers model directory (no model_index.json)")
    try:
        base = DDPMPipeline.from_pretrained(model)
    except (OSError, ValueError, EnvironmentError) as err:
        raise ArtifactError(f"{model}: cannot load a diffusers DDPM pipeline ({err})") from err
    if scheduler == "ddim":
        return DDIMPipeline(unet=base.unet, scheduler=DDIMScheduler.from_config(base.scheduler.config))
    return DDPMPipeline(unet=base.unet, scheduler=DDPMScheduler.from_config(base.scheduler.config))


def sample_diffusers_shard(model: str, out_path, shard: int, settings: dict, seed: int, progress: bool = True,
                           dataset: str | None = None) -> None:
    """Sample one shard from a diffusers pipeline. Every image has its own noise generator, seeded
    from (seed, global image index), so the images do not depend on the shard count, the batch size or which job ran."""
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
    num_classes = (unet_cfg.num_class_embeds - 1) if unet_cfg.num_class_embeds else None  # last: "no class"
    with ImageWriter(out_path, (out_size, out_size, shape[2]), attrs) as writer:
        for offset in tqdm(range(start, stop, batch), desc=f"sample shard {shard}", disable=not progress,
                           mininterval=10):
            count = min(batch, stop - offset)
            generator = [torch.Generator().manual_seed(derive_seed(seed, "sample", index))
                         for index in range(offset, offset + count)]
            labels = np.arange(offset, offset + count) % num_classes if num_classes else None
            with torch.inference_mode():
                if labels is None:
                    result = pipeline(batch_size=count, generator=generator, num_inference_steps=settings["steps"],
                                      output_type="np", **kwargs).images
                else:
                    result = sample_class_conditional(pipeline, generator, labels, settings["steps"],
                                                      settings.get("guidance_scale", GUIDANCE_SCALE), **kwargs)
            images = np.clip(np.rint(np.asarray(result) * 255.0), 0, 255).astype(np.uint8)
            if images.ndim == 3:
                images = images[..., None]
            if out_size != shape[0]:
                images = resize_images(images, out_size)
            writer.append(images, **({SOURCE_LABELS: labels} if labels is not None else {}))


def sample_class_conditional(pipeline, generator, labels: np.ndarray, steps: int, guidance_scale: float,
                             **step_kwargs) -> np.ndarray:
    """The pipeline's sampling loop with class labels and classifier-free guidance (Ho & Salimans
    2022): eps = eps(x, none) + scale * (eps(x, y) - eps(x, none)). Same initial noise and
    scheduler steps as the unconditional pipeline; returns NHWC floats in [0, 1]."""
    from diffusers.utils.torch_utils import randn_tensor

    unet, scheduler = pipeline.unet, pipeline.scheduler
    size = unet.config.sample_size
    x = randn_tensor((len(labels), unet.config.in_channels, size, size), generator=generator, device=unet.device,
                     dtype=unet.dtype)
    y = torch.as_tensor(labels, device=unet.device)
    no_class = torch.full_like(y, unet.config.num_class_embeds - 1)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        if guidance_scale == 1.0:
            eps = unet(x, t, class_labels=y).sample
        else:
            cond, uncond = unet(torch.cat([x, x]), t, class_labels=torch.cat([y, no_class])).sample.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        x = scheduler.step(eps, t, x, generator=generator, **step_kwargs).prev_sample
    return (x / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy()


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Area-resize uint8 NHWC images (used when a generator samples at another resolution)."""
    x = to_tensor(images)
    y = F.interpolate(x, size=(size, size), mode="area" if size < x.shape[-1] else "bilinear")
    return np.clip(np.rint(y.permute(0, 2, 3, 1).numpy() * 255), 0, 255).astype(np.uint8)


def shard_source_labels(path) -> np.ndarray | None:
    """The generator's per-image classes stored with a shard (conditional generators), or None."""
    with h5py.File(path, "r") as handle:
        return handle[SOURCE_LABELS][()] if SOURCE_LABELS in handle else None


def merge_shards(*, shard_paths, out_path) -> int:
    """Concatenate shard files in shard order into one chunked image set, with the generator's
    per-image `source_labels` when the shards carry them (all of them, or none)."""
    shard_paths = [Path(p) for p in shard_paths]
    offsets = {}
    for path in shard_paths:
        validate_image_set(path, require_labels=False)
        offsets[path] = read_attrs(path).get("image_offset")
    labelled = {path: shard_source_labels(path) for path in shard_paths}
    sizes = {path: image_set_length(path) for path in shard_paths}
    unlabelled = [str(p) for p, labels in labelled.items() if labels is None and sizes[p]]  # empty: no rows
    if unlabelled and len(unlabelled) < sum(1 for n in sizes.values() if n):
        raise ArtifactError(f"{unlabelled[0]}: no '{SOURCE_LABELS}' while other shards of the set have them "
                            f"({len(unlabelled)} of {len(shard_paths)} shards unlabelled)")
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
            labels = labelled[path]
            if labels is not None:
                check_labels(labels, None, f"{path}: '{SOURCE_LABELS}'")
                if len(labels) != sizes[path]:
                    raise ArtifactError(f"{path}: {sizes[path]} images but {len(labels)} {SOURCE_LABELS}")
            for offset, block in iter_image_blocks(path):
                arrays = {SOURCE_LABELS: labels[offset:offset + len(block)]} if labels is not None else {}
                writer.append(block, **arrays)
        return writer.count


def import_npz_shard(parts, out_path, shard: int, settings: dict, seed: int, dataset: str | None = None) -> None:
    """One shard of a pre-sampled set (npz parts with keys `image`/`label` as the public sets ship,
    or .npy pairs), read block by block from the shard's own range only."""
    presampled = PresampledSet.open(parts, settings.get("image_key", "image"), settings.get("label_key"))
    n_images = min(settings.get("n_images") or len(presampled), len(presampled))
    start, stop = shard_bounds(n_images, settings["n_shards"], shard)
    attrs = provenance("import_npz", settings, seed, shard=shard, image_offset=start, source=str(parts),
                       dataset=dataset)
    with ImageWriter(out_path, presampled.image_shape, attrs) as writer:
        for images, labels in presampled.blocks(start, stop, settings.get("num_classes")):
            writer.append(images, **({SOURCE_LABELS: labels} if labels is not None else {}))


def sample_shard(*, source: str, out_path, shard: int, settings: dict, seed: int,
                 dataset: str | None = None) -> None:
    """One shard of a generator's images, whatever its kind (the rule sample_shard)."""
    if settings["kind"] == "diffusers":
        sample_diffusers_shard(source, out_path, shard, settings, seed, dataset=dataset)
    elif settings["kind"] == "npz":
        import_npz_shard(source, out_path, shard, settings, seed, dataset=dataset)
    elif settings["kind"] == "gan":
        from .gan import sample_gan_shard

        sample_gan_shard(source, out_path, shard, settings, seed, dataset=dataset)
    elif settings["kind"] == "stylegan":
        from .stylegan import sample_stylegan_shard

        sample_stylegan_shard(source, out_path, shard, settings, seed, dataset=dataset)
    else:
        raise SettingsError(f"unknown generator kind '{settings['kind']}' (known: diffusers, gan, stylegan, npz)")
