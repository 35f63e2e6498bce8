"""The CUDA fast path run on the CPU: every hot loop once under bf16 autocast (torch supports it
on the CPU), checked against its fp32 result within a bf16 tolerance, and torch.compile of one
training step and one certification sampling step against the eager step.

Production never takes the fast path on a CPU (port.compute.FAST_PATH_DEVICE_TYPES is CUDA only,
so CPU results stay fp32 and bit-identical); `cuda_path_on_cpu` adds "cpu" to it, so the lines
that otherwise only a GPU runs are run and checked here. The tolerances start from bf16's 8
significant bits: one rounding is off by at most 2^-9 (0.2 %), and a forward pass through a few
layers (accumulating in fp32) stays within about 1 %. Each test says what its bound allows for
and what it measured on the development machine (torch 2.14, x86 CPU).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from port import compute
from port.artifacts import provenance, write_images
from port.attacks import pgd, random_start
from port.compute import Compute
from port.discrimination import synthetic_scores
from port.generators import Sampler
from port.labeling import class_probabilities
from port.models import build_model
from port.recipe import trades_start
from port.smoothing import Smooth
from port.stylegan import generate, load_stylegan
from port.training import TrainStep
from port.settings.training import TrainSettings
from stylegan_pickles import tiny_generator, write_network_pickle
from test_generators import tiny_unet

LINF = {"norm": "linf", "eps": 8 / 255, "step_size": 2 / 255, "steps": 3}


@contextlib.contextmanager
def cuda_path_on_cpu():
    """Inside the block the CPU takes the CUDA fast path: bf16 autocast where the compute block
    asks for it, the cuDNN autotuning flag, channels_last sampling."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compute, "FAST_PATH_DEVICE_TYPES", compute.FAST_PATH_DEVICE_TYPES | {"cpu"})
        patch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # the path sets it
        yield


@pytest.fixture
def fresh_dynamo():
    """Compiled graphs and compile counts of one test neither serve nor count for another."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def classifier(arch: str, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """A random 8x8 grey classifier."""
    torch.manual_seed(seed)
    return build_model(arch, in_channels=1, num_classes=num_classes, image_size=8, mean=[0.5], std=[0.25])


def trained_classifier(num_classes: int) -> torch.nn.Module:
    """A small CNN after 30 fp32 steps on `pattern_batch`, in eval mode: its outputs depend on
    the image and are confident (a random one's barely leave uniform, where every precision looks exact)."""
    model = classifier("small_cnn", num_classes).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(30):
        x, y = pattern_batch(32, seed=1000 + step, num_classes=num_classes)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def pattern_batch(n: int, seed: int = 0, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of a learnable problem: each class a fixed random pattern, plus noise."""
    patterns = torch.rand(num_classes, 1, 8, 8, generator=torch.Generator().manual_seed(123)) - 0.5
    draws = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=draws)
    return (0.5 + 0.5 * patterns[y] + 0.1 * torch.randn(n, 1, 8, 8, generator=draws)).clamp(0, 1), y


def flat_parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def one_training_step(compute_settings: dict, loss: str = "pgd"):
    """This step's [loss, loss_real, loss_syn, correct], the weight update and the weights' dtypes,
    from the same small-CNN weights, batch and random start whatever the settings."""
    model = classifier("small_cnn", 10).train()
    before = flat_parameters(model)
    cfg = TrainSettings.from_dict(dict(arch="small_cnn", epochs=1, batch_size=16, gamma=0.4, loss=loss, threat=LINF,
                                       compute=compute_settings))
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg)
    x, y = pattern_batch(32)
    torch.manual_seed(1)
    start = trades_start(x) if loss == "trades" else random_start(x, LINF["norm"], LINF["eps"])
    stats = step(x, y, 16, start=start)
    return stats, flat_parameters(model) - before, {p.dtype for p in model.parameters()}


def test_the_fast_path_on_the_cpu_autocasts_to_bf16_and_turns_on_autotuning():
    with cuda_path_on_cpu():
        torch.backends.cudnn.benchmark = False
        with Compute().autocast("cpu"):
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.backends.cudnn.benchmark
        with Compute("fp32").autocast("cpu"):
            assert not torch.is_autocast_enabled("cpu")
    assert not Compute().bf16("cpu") and Compute().bf16("cuda")  # the block undoes the switch


@pytest.mark.parametrize("loss", ["pgd", "trades"])
def test_bf16_training_step_is_the_fp32_step_within_bf16_rounding(loss):
    """One PORT step (PGD-3 or TRADES, linf) under CPU bf16 against fp32. The losses are forward
    values: within 1 % (measured 0.06 % and 0.4 %). The weight update is a sum over batch and pixels of
    terms that nearly cancel at random weights, so its error is bf16's rounding times about the
    square root of the term count (15-45 % in norm here): its cosine with the fp32 update must
    stay above 0.85 (measured 0.95 and 0.98; 0.93-0.98 over five seeds). The weights stay fp32."""
    reference, reference_update, _ = one_training_step({"precision": "fp32"}, loss)
    with cuda_path_on_cpu():
        stats, update, dtypes = one_training_step({"precision": "bf16"}, loss)
    assert not torch.equal(stats, reference)  # bf16 did run
    assert torch.allclose(stats[:3], reference[:3], rtol=0.01, atol=0)
    assert F.cosine_similarity(update, reference_update, dim=0) > 0.85
    assert dtypes == {torch.float32}


def test_bf16_attack_is_as_strong_as_the_fp32_attack():
    """PGD-10 under CPU bf16: the perturbation stays fp32 and exactly in the eps-ball and [0, 1],
    and the loss it gains over the random start is at least 90 % of the fp32 attack's (measured
    99.6 %). bf16 flips the sign of gradient coordinates near zero (an eighth of the pixels here),
    and those, being near zero, barely move the loss."""
    model = trained_classifier(10)
    x, y = pattern_batch(32)
    start = random_start(x, LINF["norm"], LINF["eps"], torch.Generator().manual_seed(1))
    attack = dict(norm="linf", eps=LINF["eps"], step_size=LINF["step_size"], steps=10, start=start)
    reference = pgd(model, x, y, **attack)
    with cuda_path_on_cpu():
        adversarial = pgd(model, x, y, **attack, compute=Compute())
    assert adversarial.dtype == torch.float32 and not torch.equal(adversarial, reference)
    assert (adversarial - x).abs().max() <= LINF["eps"] + 1e-6 and 0 <= adversarial.min() <= adversarial.max() <= 1
    with torch.no_grad():
        loss_at = {name: F.cross_entropy(model(images), y).item()
                   for name, images in (("start", x + start), ("fp32", reference), ("bf16", adversarial))}
    assert loss_at["bf16"] - loss_at["start"] >= 0.9 * (loss_at["fp32"] - loss_at["start"]) > 0


def test_bf16_synthetic_scores_are_the_fp32_scores_within_bf16_rounding():
    """Scores of images of all ten patterns, eight of them unseen by the two-class discriminator,
    so that they spread over (0, 1). A probability's error is at most a quarter of its logit's (the
    slope of a two-class softmax), and logits of a few units carry about 1 %: 0.01 on average
    (measured 0.002). A score is the minimum over PGD iterates whose path bf16 may change (sign
    flips), so one image may move further: 0.05 (measured 0.015)."""
    discriminator = trained_classifier(2)
    x, _ = pattern_batch(64)
    attack = dict(eps=8 / 255, steps=5, step_size=2.5 * (8 / 255) / 5)
    reference, reference_clean = synthetic_scores(discriminator, x, **attack)
    with cuda_path_on_cpu():
        scores, clean = synthetic_scores(discriminator, x, **attack, compute=Compute())
    assert not torch.equal(scores, reference)
    for bf16_scores, fp32_scores in ((scores, reference), (clean, reference_clean)):
        difference = (bf16_scores - fp32_scores).abs()
        assert difference.mean() <= 0.01 and difference.max() <= 0.05
    assert (reference_clean - reference).mean() > 0.1  # the attack moves the scores far more than bf16 does


def test_bf16_pseudo_label_probabilities_are_the_fp32_ones_within_bf16_rounding(tmp_path):
    """Softmax outputs of a confident classifier over an image set: within 0.01 (measured 0.0016),
    a probability's error being at most half its largest logit error."""
    images = (pattern_batch(40)[0].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    write_images(tmp_path / "images.h5", images, provenance("sample", {}, 0, dataset="toy"))
    model = trained_classifier(10)
    reference = class_probabilities(model, tmp_path / "images.h5", 10, batch=16, progress=False)
    with cuda_path_on_cpu():
        probabilities = class_probabilities(model, tmp_path / "images.h5", 10, batch=16, progress=False,
                                            compute=Compute())
    assert not np.array_equal(probabilities, reference)
    np.testing.assert_allclose(probabilities, reference, rtol=0, atol=0.01)


def bf16_outputs(model: torch.nn.Module) -> list:
    """Records whether each forward pass of `model` returned bf16: proof of the autocast region."""
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype == torch.bfloat16))
    return seen


def test_bf16_certification_counts_are_the_fp32_counts_but_for_near_ties():
    """Class counts over 2,000 noisy draws: bf16 changes the answer only for draws whose top two
    logits are within its rounding of each other, well under 1 % of the draws (total variation
    measured 0.1 %)."""
    model = classifier("mlp", 10).eval()
    x = pattern_batch(1)[0][0]

    def counts(compute_block):
        return Smooth(model, 10, sigma=0.25, compute=compute_block)._sample_noise(
            x, 2000, 500, torch.Generator().manual_seed(3))

    reference = counts(None)
    seen = bf16_outputs(model)
    with cuda_path_on_cpu():
        bf16_counts = counts(Compute())
    assert seen == [True] * 4 and (reference > 0).sum() >= 4  # bf16 passes over draws that spread over classes
    assert bf16_counts.sum() == 2000 and 0.5 * np.abs(bf16_counts - reference).sum() <= 0.01 * 2000


def test_bf16_ddpm_sampling_is_the_fp32_chain_within_bf16_rounding():
    """The 10-step DDPM chain in channels_last under bf16: each step's noise prediction carries
    about 1 % error, but the chain clips its x0 estimate to [-1, 1] and its later steps average
    earlier errors down, so images stay within 0.01 on average (measured 0.002) and 0.1 everywhere
    (measured 0.04) of the fp32 chain, on the [-1, 1] scale."""
    unet, config = tiny_unet(3), DDPMScheduler(num_train_timesteps=1000).config
    reference = Sampler(unet, "ddpm", config, steps=10, device="cpu")(0, range(8))
    with cuda_path_on_cpu():
        sampler = Sampler(unet, "ddpm", config, steps=10, device="cpu")
        images = sampler(0, range(8))
    assert sampler.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert images.dtype == torch.float32 and not torch.equal(images, reference)
    difference = (images - reference).abs()
    assert difference.mean() <= 0.01 and difference.max() <= 0.1


def test_bf16_stylegan_images_are_the_fp32_images_within_bf16_rounding(tmp_path):
    """StyleGAN2 synthesis in bf16 (its image path stays fp32): uint8 images within 1 level on
    average (measured 0.5) and 16 of 255 everywhere (measured 5); a modulated convolution's output
    is demodulated to unit scale, so its rounding is a fraction of a level per layer."""
    generator = load_stylegan(write_network_pickle(tmp_path / "network.pkl", tiny_generator()))
    reference, _ = generate(generator, np.arange(8), seed=0, truncation_psi=0.7, noise_mode="random")
    with cuda_path_on_cpu():
        images, _ = generate(generator, np.arange(8), seed=0, truncation_psi=0.7, noise_mode="random")
    difference = np.abs(images.astype(int) - reference)
    assert difference.any() and difference.mean() <= 1 and difference.max() <= 16


def test_compiled_training_step_is_the_eager_step(fresh_dynamo):
    """`compute.compile` on one PGD step with BatchNorm: inductor reorders fp32 sums, so the
    update agrees to about 1e-6 of its norm (measured); 1e-4 is far below any real error."""
    reference, reference_update, _ = one_training_step({"precision": "fp32"})
    stats, update, _ = one_training_step({"precision": "fp32", "compile": True})
    assert torch._dynamo.utils.counters["frames"]["ok"] > 0
    assert torch.allclose(stats, reference, rtol=1e-5, atol=1e-6)
    assert (update - reference_update).norm() <= 1e-4 * reference_update.norm()


def test_compiled_certification_sampling_counts_are_the_eager_counts(fresh_dynamo):
    """`compute.compile` on the certification's noisy forward passes: fp32 reordering moves logits
    by about 1e-7, so no draw of 2,000 changes its class."""
    model = classifier("mlp", 10).eval()
    x = pattern_batch(1)[0][0]
    counts = [Smooth(model, 10, sigma=0.25, compute=Compute("fp32", compile=compiled))._sample_noise(
        x, 2000, 500, torch.Generator().manual_seed(3)) for compiled in (False, True)]
    assert torch._dynamo.utils.counters["frames"]["ok"] > 0
    assert counts[1].tolist() == counts[0].tolist() and (counts[0] > 0).sum() >= 4
