"""Benchmark 2: sampling throughput of the project's Sampler against diffusers' DDPMPipeline.

The model is the `google/ddpm-cifar10-32` UNet architecture (35.7M parameters) built from its
config with random weights (no download; speed does not depend on the weights). Both paths run
the same number of steps on the same batch; the rate is UNet evaluations per second. The plain
baselines are DDPMPipeline in fp32 with one CPU generator per image (how the project sampled
before) and with a single device generator (diffusers' fastest plain use). The few-step samplers
are reported in images/s against the full chain's images/s (evaluations/s over its steps).

    python bench/sampling.py            # full: H100-sized, about a minute
    python bench/sampling.py --small    # tiny UNet on the CPU, seconds
"""

from __future__ import annotations

import copy

import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

from harness import compared, parser, rate, write_result
from port.generators import Sampler, image_noise

CIFAR10_UNET = dict(  # google/ddpm-cifar10-32's unet/config.json
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), downsample_padding=0,
    freq_shift=1, flip_sin_to_cos=False, norm_eps=1e-6, norm_num_groups=32, act_fn="silu")
CIFAR10_SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                        clip_sample=True, variance_type="fixed_small")
TINY_UNET = dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
                 down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                 norm_num_groups=4)

FULL = dict(unet=CIFAR10_UNET, batch=256, steps=50, chain_steps=250, few_steps=(10, 20), repeats=2)
SMALL = dict(unet=TINY_UNET, batch=8, steps=6, chain_steps=100, few_steps=(3, 6), repeats=1)
FEW_STEP = ("ddim", "dpmsolver++", "unipc")


def plain_ddim(unet, config, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The reference loop: diffusers' DDIM scheduler in fp32, from the same initial noise."""
    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t).sample, t, x).prev_sample
    return x


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    setup = SMALL if args.small else FULL
    device, batch, steps = torch.device(args.device), setup["batch"], setup["steps"]
    torch.manual_seed(0)
    unet = UNet2DModel(**setup["unet"]).eval()
    schedule = DDPMScheduler(**CIFAR10_SCHEDULE)
    pipeline = DDPMPipeline(unet=unet.to(device), scheduler=schedule)
    pipeline.set_progress_bar_config(disable=True)
    n_params = sum(p.numel() for p in unet.parameters())
    timing = dict(device=device, repeats=setup["repeats"])

    def pipeline_call(generator):
        with torch.inference_mode():
            pipeline(batch_size=batch, generator=generator(), num_inference_steps=steps, output_type="pt")

    per_image = rate(lambda: pipeline_call(lambda: [torch.Generator().manual_seed(i) for i in range(batch)]),
                     batch * steps, **timing)
    one_generator = rate(lambda: pipeline_call(lambda: torch.Generator(device).manual_seed(0)), batch * steps, **timing)

    sampler = Sampler(copy.deepcopy(unet), "ddpm", schedule.config, steps, device=device)
    fast = rate(lambda: sampler.uint8_images(0, range(batch)), batch * steps, **timing)
    rows = [compared("ddpm chain vs DDPMPipeline, one CPU generator per image", "UNet evaluations/s", fast, per_image,
                     steps=steps, batch=batch),
            compared("ddpm chain vs DDPMPipeline, one device generator", "UNet evaluations/s", fast, one_generator,
                     steps=steps, batch=batch)]

    # Few-step samplers: images/s against the full chain's (the same UNet evaluations/s over more steps).
    chain_images = one_generator / setup["chain_steps"]
    for name in FEW_STEP:
        for few in setup["few_steps"]:
            few_sampler = Sampler(copy.deepcopy(unet), name, schedule.config, few, device=device)
            images = rate(lambda: few_sampler.uint8_images(0, range(batch)), batch, **timing)
            rows.append(compared(f"{name} {few} steps vs DDPMPipeline {setup['chain_steps']}-step chain", "images/s",
                                 images, chain_images, steps=few, batch=batch,
                                 unet_evaluations_per_s=images * few))

    # Agreement: the fast DDIM path against diffusers' plain fp32 loop from the same initial noise.
    ddim = Sampler(copy.deepcopy(unet), "ddim", schedule.config, setup["few_steps"][0], device=device)
    x0, _ = image_noise(0, range(batch), ddim.shape, 0, device)
    with torch.inference_mode():
        reference = plain_ddim(unet, schedule.config, x0.clone(), setup["few_steps"][0])
    difference = (ddim(0, range(batch)) - reference).abs()
    agreement = {"what": "ddim fast path vs plain fp32 loop, same noise", "unit": "abs. difference in [-1, 1]",
                 "max": float(difference.max()), "mean": float(difference.mean())}
    write_result("sampling", args, dict(unet_parameters=n_params, **{k: v for k, v in setup.items() if k != "unet"},
                                        unet=setup["unet"], autocast="bf16" if device.type == "cuda" else "fp32"),
                 rows + [agreement])


if __name__ == "__main__":
    main()
