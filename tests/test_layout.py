"""RGB batches from port.loaders.to_tensor are channels-last in memory, which with three channels is
not contiguous NCHW (issue 17: AutoAttack crashed on it). Every stage that takes such a batch must
give the answer it gives on contiguous input; one-channel digits cannot tell the two apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from port.artifacts import provenance, write_images
from port.attacks import pgd
from port.discrimination import synthetic_scores
from port.labeling import class_probabilities
from port.loaders import augment, to_tensor
from port.models import build_model
from port.ranking import penultimate_features
from port.smoothing import Smooth

ARCHITECTURES = ["small_cnn", "mlp"]  # convolutions, and a Flatten straight off the image


@pytest.fixture(scope="module")
def rgb():
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    x = to_tensor(images)
    assert not x.is_contiguous()
    return images, x, x.contiguous()


def classifier(arch: str, num_classes: int = 10):
    torch.manual_seed(0)
    return build_model(arch, 3, num_classes, 32, [0.5] * 3, [0.25] * 3).eval()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_smoothing_noise_counts(rgb, arch):
    _, x, contiguous = rgb
    smooth = Smooth(classifier(arch), 10, sigma=0.25)
    counts = [smooth._sample_noise(t[0], 40, 16, torch.Generator().manual_seed(1)) for t in (x, contiguous)]
    np.testing.assert_array_equal(*counts)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_pgd_and_synthetic_scores(rgb, arch):
    _, x, contiguous = rgb
    model, y = classifier(arch), torch.tensor([0, 1, 2])
    start = torch.full(x.shape, 0.01)
    adversarial = [pgd(model, t, y, "l2", 0.5, 0.2, steps=2, start=start) for t in (x, contiguous)]
    torch.testing.assert_close(*adversarial)
    discriminator = classifier(arch, num_classes=2)
    scores = [synthetic_scores(discriminator, t, eps=0.03, steps=2, step_size=0.015) for t in (x, contiguous)]
    torch.testing.assert_close(*scores)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_pseudo_label_probabilities_and_frechet_features(rgb, arch, tmp_path):
    images, _, contiguous = rgb
    model = classifier(arch)
    write_images(tmp_path / "images.h5", images, provenance("sample", {}, 0))
    with torch.no_grad():
        expected = torch.softmax(model(contiguous), 1).numpy()
    np.testing.assert_allclose(class_probabilities(model, tmp_path / "images.h5", 10, progress=False), expected,
                               rtol=1e-5, atol=1e-6)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        logits = torch.from_numpy(penultimate_features(model, images)).float() @ last.weight.T + last.bias
    torch.testing.assert_close(logits, model(contiguous).detach(), rtol=1e-4, atol=1e-5)


def test_augmentation(rgb):
    _, x, contiguous = rgb
    crops = [augment(t, torch.Generator().manual_seed(2), crop_padding=4, flip=True) for t in (x, contiguous)]
    torch.testing.assert_close(*crops, rtol=0, atol=0)
