"""Robustness evaluation (port.evaluation) on RGB images, whose channels-last tensors do not
share the memory layout of contiguous NCHW (one-channel digits do)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from port.errors import SettingsError
from port.evaluation import STANDARD_ATTACKS, autoattack_accuracy, autoattack_name
from port.loaders import to_tensor
from port.models import build_model


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_autoattack_runs_every_attack_on_rgb_images(norm, cheap_autoattack, caplog):
    torch.manual_seed(0)
    model = build_model("small_cnn", 3, 10, 32, [0.5] * 3, [0.25] * 3).eval()
    x = to_tensor(np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8))
    assert not x.is_contiguous()  # the layout the pipeline's loaders produce for RGB
    with torch.no_grad():
        y = model(x).argmax(1)  # every image starts correct, so every attack runs on it
    with caplog.at_level(logging.DEBUG, logger="auto-attack"):
        # a ball too small to flip a prediction: all three images survive to the last attack
        assert autoattack_accuracy(model, x, y, norm, eps=1e-5, seed=0, batch_size=3) == 1.0
    assert {f"running {a}" for a in ("apgd-ce", "apgd-t", "fab-t", "square")} <= set(caplog.messages)


def test_a_subset_of_autoattack_runs_only_those_attacks_with_the_standard_settings(cheap_autoattack, caplog):
    torch.manual_seed(0)
    model = build_model("small_cnn", 1, 10, 8, [0.5], [0.25]).eval()
    x = to_tensor(np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8))
    with torch.no_grad():
        y = model(x).argmax(1)
    with caplog.at_level(logging.DEBUG, logger="auto-attack"):
        autoattack_accuracy(model, x, y, "linf", eps=1e-5, seed=0, attacks=("apgd-t", "apgd-ce"))
    ran = [m for m in caplog.messages if m.startswith("running ")]
    assert ran == ["running apgd-ce", "running apgd-t"]  # the standard order, whatever the config's
    assert autoattack_name(["apgd-t", "apgd-ce"]) == "apgd-ce+apgd-t"
    assert autoattack_name(STANDARD_ATTACKS) == autoattack_name(None) == "standard"
    with pytest.raises(SettingsError, match="fab"):
        autoattack_accuracy(model, x, y, "linf", eps=1e-5, seed=0, attacks=("fab",))
