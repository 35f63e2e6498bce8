"""Every architecture that config.yaml's CIFAR-10 datasets use (ResNet-18, WRN-28-10, WRN-34-10,
WRN-28-10-SiLU) on RGB input, on CPU: one PGD training step through the real trainer, one
AutoAttack batch and one certification batch each, at the smallest batch (2 images) that BatchNorm
and PGD training accept."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cifar_format import class_coloured_images
from port.artifacts import provenance, read_csv, read_image_set, write_images
from port.evaluation import autoattack_accuracy
from port.loaders import to_tensor
from port.models import load_model
from port.smoothing import certify_dataset
from port.training import train

from conftest import REPO


def cifar10_architectures() -> list[str]:
    """Labelers, discriminator, PORT and smoothing architectures of every cifar10-source dataset."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    used = set()
    for dataset in config["datasets"].values():
        if dataset["source"]["kind"] == "cifar10":
            used |= {labeler["arch"] for labeler in dataset["labelers"].values()}
            used |= {dataset[block]["arch"] for block in ("discrimination",) if "arch" in dataset.get(block, {})}
            for block in ("training", "smoothing"):
                used |= set(dataset.get(block, {}).get("architectures", []))
    return sorted(used)


ARCHITECTURES = cifar10_architectures()


def test_the_paper_architectures_are_covered():
    assert {"resnet18", "wrn-28-10", "wrn-34-10"} <= set(ARCHITECTURES)


@pytest.fixture(scope="module")
def rgb_sets(tmp_path_factory):
    """Three training images (two train in one batch of 2, one validates) and two test images."""
    root = tmp_path_factory.mktemp("zoo")
    gen = np.random.default_rng(0)
    for name, labels in (("train", np.array([0, 3, 7])), ("test", np.array([2, 5]))):
        attrs = provenance("prepare_data", {}, 0, dataset="toy", num_classes=10, channel_mean=[0.5] * 3,
                           channel_std=[0.25] * 3)
        write_images(root / f"{name}.h5", class_coloured_images(gen, labels), attrs, labels=labels)
    return root


@pytest.fixture(scope="module", params=ARCHITECTURES)
def trained(request, rgb_sets):
    """(architecture, model path): one epoch of one PGD-1 training step at batch 2."""
    arch, out = request.param, rgb_sets / request.param
    settings = dict(arch=arch, epochs=1, batch_size=2, lr=0.01, val_fraction=1 / 3, val_attack_steps=1,
                    threat=dict(norm="linf", eps=8 / 255, step_size=8 / 255, steps=1), model_selection="last")
    train(train_path=rgb_sets / "train.h5", model_out=out / "model.pt", history_out=out / "history.csv",
          checkpoint_path=out / "checkpoint.pt", settings=settings, seed=0, progress=False)
    return arch, out


def test_one_pgd_training_step(trained):
    arch, out = trained
    history = read_csv(out / "history.csv")
    assert len(history) == 1 and np.isfinite(history["loss_real"]).all()
    assert history["val_robust_acc"].between(0, 1).all()
    assert load_model(out / "model.pt", expect_arch=arch, expect_classes=10)[1]["in_channels"] == 3


def test_one_autoattack_batch(trained, rgb_sets, cheap_autoattack, caplog):
    arch, out = trained
    model, _ = load_model(out / "model.pt")
    x = to_tensor(read_image_set(rgb_sets / "test.h5")[0])
    with torch.no_grad():
        y = model(x).argmax(1)  # both images start correct, so every attack runs on them
    with caplog.at_level(logging.DEBUG, logger="auto-attack"):
        assert autoattack_accuracy(model, x, y, "linf", eps=1e-5, seed=0, batch_size=2) == 1.0
    assert "running square" in caplog.messages  # the last of the four attacks


def test_one_certification_batch(trained, rgb_sets):
    arch, out = trained
    settings = dict(sigma=0.25, n0=2, n=4, alpha=0.001, batch_size=4, skip=2)
    frame = certify_dataset(model_path=out / "model.pt", test_path=rgb_sets / "test.h5", out_csv=out / "certify.csv",
                            settings=settings, seed=0)
    assert frame["idx"].tolist() == [0] and frame["predict"].between(-1, 9).all()
    # four votes cannot certify at alpha = 0.001 (a lower bound of 0.18 < 0.5): CERTIFY abstains
    assert (frame["predict"] == -1).all() and (frame["radius"] == 0).all()
    pd.testing.assert_frame_equal(read_csv(out / "certify.csv").drop(columns="seconds"),
                                  frame.drop(columns="seconds"), check_dtype=False)
