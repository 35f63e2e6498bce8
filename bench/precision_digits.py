"""bf16 against fp32 training: adversarial training (the digits config's linf threat, real data
only) of the digits small_cnn with `compute.precision` bf16 and fp32, same seeds; clean and PGD-20
accuracy on the digits test set, evaluated in fp32. The issue's bar: bf16 within 1 point of fp32.

    python bench/precision_digits.py           # full setting (GPU: the config's epochs, 2 seeds)
    python bench/precision_digits.py --small   # CPU, 1 epoch, 1 seed (there bf16 runs as fp32)

Rates are training images/s of each precision (the ratio: bf16 over fp32). On the CPU both
precisions run fp32, so their accuracies must be equal.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

import harness
from port.artifacts import read_image_set, read_attrs
from port.attacks import Attack
from port.settings.training import training_settings
from port.data import prepare_dataset
from port.evaluation import accuracy
from port.loaders import to_tensor
from port.models import load_model
from port.training import train

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def train_and_evaluate(workdir: Path, settings: dict, seed: int, device) -> dict:
    tag = f"{settings['compute']['precision']}-seed{seed}"
    summary = train(train_path=workdir / "train.h5", model_out=workdir / f"{tag}.pt",
                    history_out=workdir / f"{tag}.csv", checkpoint_path=workdir / f"{tag}.ckpt",
                    settings=settings, seed=seed, progress=False)
    model, _ = load_model(workdir / f"{tag}.pt")
    model.to(device)
    images, labels = read_image_set(workdir / "test.h5")
    x, y = to_tensor(images).to(device), torch.from_numpy(labels).to(device)
    threat = settings["threat"]
    attack = Attack(threat["norm"], threat["eps"], 2.5 * threat["eps"] / 20, 20)
    torch.manual_seed(seed)
    return {"seed": seed, "precision": settings["compute"]["precision"], "clean_acc": accuracy(model, x, y),
            "pgd20_acc": accuracy(model, x, y, attack=attack), "train_seconds": summary["train_seconds"]}


def main():
    p = harness.parser(__doc__.split("\n\n")[0])
    args = harness.parse(p)
    config = yaml.safe_load(CONFIG.read_text())
    digits = config["datasets"]["digits"]
    base = training_settings(config, "digits", "linf", "small_cnn", "baseline")
    epochs, seeds = (1, [0]) if args.small else (base["epochs"], [0, 1])
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        prepare_dataset(name="digits", source=digits["source"], seed=config.get("seed", 0), train_out=workdir / "train.h5",
                        test_out=workdir / "test.h5")
        n_train = len(read_image_set(workdir / "train.h5")[1])
        for seed in seeds:
            for precision in ("bf16", "fp32"):
                settings = {**base, "epochs": epochs, "compute": {**base.get("compute", {}), "precision": precision}}
                runs.append(train_and_evaluate(workdir, settings, seed, args.device))
                print(runs[-1], flush=True)
        num_classes = int(read_attrs(workdir / "train.h5")["num_classes"])
    by = {(r["precision"], r["seed"]): r for r in runs}
    diffs = {m: [by["bf16", s][m] - by["fp32", s][m] for s in seeds] for m in ("clean_acc", "pgd20_acc")}
    seconds = {prec: sum(by[prec, s]["train_seconds"] for s in seeds) for prec in ("bf16", "fp32")}
    images = n_train * (1 - base.get("val_fraction", 0.1)) * epochs * len(seeds)
    row = harness.compared("digits AT, bf16 vs fp32 training", "training images/s", images / seconds["bf16"],
                           images / seconds["fp32"], runs=runs,
                           mean_diff_bf16_minus_fp32={m: float(np.mean(d)) for m, d in diffs.items()},
                           within_one_point=all(abs(float(np.mean(d))) <= 0.01 for d in diffs.values()))
    settings = {"arch": "small_cnn", "threat": base["threat"], "epochs": epochs, "seeds": seeds,
                "batch_size": base["batch_size"], "num_classes": num_classes, "evaluation": "fp32, PGD-20"}
    harness.write_result("precision_digits", args, settings, [row])


if __name__ == "__main__":
    main()
