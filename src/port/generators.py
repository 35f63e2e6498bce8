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

from .artifacts import (MODEL_DIRECTORY_MARKER, SOURCE_LABELS, ImageWriter, check_labels, dataset_of, image_set_length,
                        image_set_shape, iter_image_blocks, open_hdf5, provenance, read_attrs, read_image_set,
                        validate_image_set)
from .errors import ArtifactError, SettingsError
from .compute import fast_path
from .data import check_same_geometry
from .devices import default_device
from .loaders import to_tensor
from .presampled import PresampledSet
from .seeds import derive_seed, rng
from .shards import shard_bounds

log = logging.getLogger(__name__)
SCHEDULERS = ("ddpm", "ddim", "dpmsolver++", "unipc")
LABEL_DROPOUT = 0.1  # class-conditional DDPMs: P(label -> "no class") in training, for guidance
GUIDANCE_SCALE = 1.0  # 1.0: plain conditional sampling; > 1 extrapolates away from the unconditional model


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
    """diffusers' own DDPM or DDIM pipeline from a hub id or a `save_pretrained` directory: the
    model with its training schedule, and the plain sampling path the fast Sampler is measured against."""
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline

    if scheduler not in ("ddpm", "ddim"):
        raise SettingsError(f"unknown scheduler '{scheduler}' for a diffusers pipeline (known: ddpm, ddim; "
                            f"the fast Sampler also knows {', '.join(SCHEDULERS[2:])})")
    local = Path(model)
    if local.exists() and not (local / MODEL_DIRECTORY_MARKER).is_file():
        raise ArtifactError(f"{model}: not a diffusers model directory (no {MODEL_DIRECTORY_MARKER})")
    try:
        base = DDPMPipeline.from_pretrained(model)
    except (OSError, ValueError, EnvironmentError) as err:
        raise ArtifactError(f"{model}: cannot load a diffusers DDPM pipeline ({err})") from err
    if scheduler == "ddim":
        return DDIMPipeline(unet=base.unet, scheduler=DDIMScheduler.from_config(base.scheduler.config))
    return base


def stepping_scheduler(name: str, config, eta: float = 0.0):
    """The diffusers scheduler that steps the chain, and the keyword arguments of its `step`.

    `ddpm` steps as DDIM with eta = 1 and the noise prediction re-derived from the clipped x0: with
    the DDPM's fixed-small variance this is the DDPM ancestral chain itself (the same posterior mean
    and variance, DDIM paper eq. 16), but the step noise is passed in, so each image's noise comes
    from its own generator. DPM-Solver++ and UniPC are deterministic multistep solvers on their own
    `linspace` timestep spacing (the few-step setting they were made for).
    """
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    if name == "ddpm":
        variance = config.get("variance_type", "fixed_small")
        if variance not in ("fixed_small", "fixed_small_log"):
            raise ArtifactError(f"scheduler 'ddpm' samples fixed-small-variance DDPMs, this one has '{variance}'")
        return DDIMScheduler.from_config(config), {"eta": 1.0, "use_clipped_model_output": True}
    if name == "ddim":
        return DDIMScheduler.from_config(config), {"eta": eta}
    # The DDPM chain clips its x0 prediction to [-1, 1] (`clip_sample`); the solvers must too. Their
    # dynamic thresholding with sample_max_value = the clip range is that clip. Without it, 10 or 20
    # steps of either solver give digits 70x farther from the real set (Frechet distance in lanet
    # features 9.9 against 0.25 with it; bench/few_step_quality.py).
    clip = {"thresholding": bool(config.get("clip_sample", False)),
            "sample_max_value": float(config.get("clip_sample_range", 1.0))}
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++",
                                                       timestep_spacing="linspace", **clip), {}
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config, timestep_spacing="linspace", **clip), {}
    raise SettingsError(f"unknown scheduler '{name}' (known: {', '.join(SCHEDULERS)})")


def image_noise(seed: int, indices, shape: tuple, n_steps: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each image's initial noise and, for stochastic chains, its noise for every step, drawn at
    once from the image's own generator seeded by (seed, global index): no per-step host work, and
    an image does not depend on the batch it is sampled in."""
    draws = torch.stack([torch.randn((1 + n_steps, *shape), device=device,
                                     generator=torch.Generator(device).manual_seed(derive_seed(seed, "sample", i)))
                         for i in indices], dim=1)
    return draws[0], (draws[1:] if n_steps else None)


class Sampler:
    """The fast sampling loop: a diffusers UNet and scheduler, bf16 autocast and channels_last on
    CUDA (port.compute.fast_path), the device synchronised once per batch (when the images are copied out).

    A class-conditional UNet (its last class embedding is "no class") samples image i as class
    i mod num_classes, with classifier-free guidance (Ho & Salimans 2022) when the scale is not 1:
    eps = eps(x, none) + scale * (eps(x, y) - eps(x, none)).
    """

    def __init__(self, unet, scheduler: str, scheduler_config, steps: int, eta: float = 0.0, device=None,
                 guidance_scale: float = GUIDANCE_SCALE):
        self.device = torch.device(device or default_device())
        self.fast_path = fast_path(self.device)
        self.unet = unet.to(self.device).eval()
        if self.fast_path:
            self.unet = self.unet.to(memory_format=torch.channels_last)
        self.scheduler, self.step_kwargs = stepping_scheduler(scheduler, scheduler_config, eta)
        self.steps = steps
        self.stochastic = self.step_kwargs.get("eta", 0.0) > 0
        config = self.unet.config
        self.shape = (config.in_channels, config.sample_size, config.sample_size)
        self.num_classes = config.num_class_embeds - 1 if config.num_class_embeds else None
        self.guidance_scale = guidance_scale

    @classmethod
    def from_pretrained(cls, model: str, settings: dict, device=None) -> "Sampler":
        pipeline = load_pipeline(model, "ddpm")
        return cls(pipeline.unet, settings["scheduler"], pipeline.scheduler.config, settings["steps"],
                   settings.get("eta", 0.0), device, settings.get("guidance_scale", GUIDANCE_SCALE))

    def class_labels(self, indices) -> np.ndarray | None:
        """The class each image is sampled as (conditional UNets), from its global index."""
        return np.asarray(indices) % self.num_classes if self.num_classes else None

    def _noise_prediction(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            return self.unet(x, t).sample
        if self.guidance_scale == 1.0:
            return self.unet(x, t, class_labels=labels).sample
        no_class = torch.full_like(labels, self.num_classes)
        cond, uncond = self.unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, no_class])).sample.chunk(2)
        return uncond + self.guidance_scale * (cond - uncond)

    @torch.inference_mode()
    def __call__(self, seed: int, indices) -> torch.Tensor:
        """Images of the given global indices, as float NCHW in [-1, 1] on the device."""
        self.scheduler.set_timesteps(self.steps)  # also resets a multistep solver's history
        timesteps = self.scheduler.timesteps
        x, trajectory = image_noise(seed, indices, self.shape, len(timesteps) if self.stochastic else 0, self.device)
        x = x * self.scheduler.init_noise_sigma
        if self.fast_path:
            x = x.contiguous(memory_format=torch.channels_last)
        on_device = timesteps.to(self.device)
        labels = self.class_labels(indices)
        labels = None if labels is None else torch.from_numpy(labels).to(self.device)
        for i, t in enumerate(timesteps):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.fast_path):
                eps = self._noise_prediction(self.scheduler.scale_model_input(x, t), on_device[i], labels)
            noise = {"variance_noise": trajectory[i]} if self.stochastic else {}
            x = self.scheduler.step(eps.float(), t, x, **self.step_kwargs, **noise).prev_sample
        return x

    def uint8_images(self, seed: int, indices) -> np.ndarray:
        """uint8 NHWC images, rounded as DDPMPipeline's [0, 1] output times 255."""
        x = self(seed, indices)
        images = (x / 2 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).cpu().numpy()


def sample_diffusers_shard(model: str, out_path, shard: int, settings: dict, seed: int, progress: bool = True,
                           dataset: str | None = None) -> None:
    """Sample one shard from a diffusers model. Every image's noise comes from its own generator, seeded
    from (seed, global image index), so the images do not depend on the shard count, the batch size or which job ran."""
    start, stop = shard_bounds(settings["n_images"], settings["n_shards"], shard)
    sampler = Sampler.from_pretrained(model, settings)
    size = sampler.shape[1]
    out_size = settings.get("image_size") or size
    batch = settings["batch_size"]
    attrs = provenance("sample", settings, seed, shard=shard, image_offset=start, image_stop=stop, model=str(model),
                       dataset=dataset)
    with ImageWriter(out_path, (out_size, out_size, sampler.shape[0]), attrs) as writer:
        for offset in tqdm(range(start, stop, batch), desc=f"sample shard {shard}", disable=not progress,
                           mininterval=10):
            indices = range(offset, min(offset + batch, stop))
            images = sampler.uint8_images(seed, indices)
            labels = sampler.class_labels(indices)
            if out_size != size:
                images = resize_images(images, out_size)
            writer.append(images, **({SOURCE_LABELS: labels} if labels is not None else {}))


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Area-resize uint8 NHWC images (used when a generator samples at another resolution)."""
    x = to_tensor(images)
    y = F.interpolate(x, size=(size, size), mode="area" if size < x.shape[-1] else "bilinear")
    return np.clip(np.rint(y.permute(0, 2, 3, 1).numpy() * 255), 0, 255).astype(np.uint8)


def shard_source_labels(path) -> np.ndarray | None:
    """The generator's per-image classes stored with a shard (conditional generators), or None."""
    with open_hdf5(path) as handle:
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


def import_npz_shard(parts, out_path, shard: int, settings: dict, seed: int, dataset: str | None = None,
                     reference=None) -> None:
    """One shard of a pre-sampled set (npz parts with keys `image`/`label` as the public sets ship,
    or .npy pairs), read block by block from the shard's own range only. Its images must have
    the geometry of the `reference` image set (the real training set)."""
    presampled = PresampledSet.open(parts, settings.get("image_key", "image"), settings.get("label_key"))
    if reference is not None:
        check_same_geometry(reference, image_set_shape(reference), presampled.parts[0][0].path,
                            presampled.image_shape)
    n_images = min(settings.get("n_images") or len(presampled), len(presampled))
    start, stop = shard_bounds(n_images, settings["n_shards"], shard)
    attrs = provenance("import_npz", settings, seed, shard=shard, image_offset=start, source=str(parts),
                       dataset=dataset)
    with ImageWriter(out_path, presampled.image_shape, attrs) as writer:
        for images, labels in presampled.blocks(start, stop, settings.get("num_classes")):
            writer.append(images, **({SOURCE_LABELS: labels} if labels is not None else {}))


def sample_shard(*, source: str, out_path, shard: int, settings: dict, seed: int,
                 dataset: str | None = None, reference=None) -> None:
    """One shard of a generator's images, whatever its kind (the rule sample_shard); `reference`:
    the real image set an imported npz set must match."""
    from .fetch import verify_if_fetched

    verify_if_fetched(source)  # a hub snapshot or URL file fetched by rule fetch_model: unchanged since
    if settings["kind"] == "diffusers":
        sample_diffusers_shard(source, out_path, shard, settings, seed, dataset=dataset)
    elif settings["kind"] == "npz":
        import_npz_shard(source, out_path, shard, settings, seed, dataset=dataset, reference=reference)
    elif settings["kind"] == "gan":
        from .gan import sample_gan_shard

        sample_gan_shard(source, out_path, shard, settings, seed, dataset=dataset)
    elif settings["kind"] == "stylegan":
        from .stylegan import sample_stylegan_shard

        sample_stylegan_shard(source, out_path, shard, settings, seed, dataset=dataset)
    else:
        raise SettingsError(f"unknown generator kind '{settings['kind']}' (known: diffusers, gan, stylegan, npz)")
