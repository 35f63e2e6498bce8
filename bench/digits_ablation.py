"""Why does (or doesn't) PORT beat the baseline on digits? Vary seed, gamma, the amount of
synthetic data and epochs with the pipeline's own trainer, and measure synthetic quality by
training on synthetic images alone. Reads the artifacts of a finished `snakemake --cores all`.

    python bench/digits_ablation.py --threat linf --out bench/results/digits_ablation_linf.csv

Robust accuracy here is PGD-20 on the full digits test set (AutoAttack is the pipeline's job).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import torch
import yaml

from port.artifacts import provenance, read_attrs, read_image_set, write_images
from port.settings.schema import SCHEMA
from port.settings.training import training_settings
from port.evaluation import accuracy
from port.loaders import to_tensor
from port.models import load_model
from port.seeds import rng
from port.attacks import Attack
from port.training import train

RESULTS = Path("results/digits")


def subset(source: Path, n: int, out: Path, seed: int, attrs: dict) -> Path:
    images, labels = read_image_set(source)
    idx = rng(seed, "ablation-subset").choice(len(images), size=min(n, len(images)), replace=False)
    write_images(out, images[idx], {**provenance("ablation"), **attrs}, labels=labels[idx])
    return out


def one_run(job: dict) -> dict:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_attrs = {k: read_attrs(RESULTS / "data/train.h5")[k] for k in ("num_classes", "channel_mean",
                                                                          "channel_std")}
        train_path, synthetic = RESULTS / "data/train.h5", None
        if job["source"] == "synthetic_only":
            train_path = subset(RESULTS / "synthetic/ddpm/selected/random.h5", job["n_synthetic"],
                                tmp / "syn.h5", job["seed"], train_attrs)
        elif job["n_synthetic"]:
            synthetic = subset(RESULTS / "synthetic/ddpm/selected/random.h5", job["n_synthetic"], tmp / "syn.h5",
                               job["seed"], train_attrs)
        started = time.time()
        train(train_path=train_path, model_out=tmp / "model.pt", history_out=tmp / "history.csv",
              checkpoint_path=tmp / "ckpt.pt", settings=job["settings"], seed=job["seed"],
              synthetic_path=synthetic, progress=False)
        model, _ = load_model(tmp / "model.pt")
    images, labels = read_image_set(RESULTS / "data/test.h5")
    x, y = to_tensor(images), torch.from_numpy(labels)
    threat = job["settings"]["threat"]
    attack = Attack(threat["norm"], threat["eps"], 2.5 * threat["eps"] / 20, 20)
    torch.manual_seed(0)
    return {k: v for k, v in job.items() if k != "settings"} | {
        "gamma": job["settings"]["gamma"], "epochs": job["settings"]["epochs"],
        "clean_acc": accuracy(model, x, y), "pgd20_acc": accuracy(model, x, y, attack=attack),
        "seconds": time.time() - started}


def jobs(threat: str, seeds: list[int]) -> list[dict]:
    config = yaml.safe_load(open("config/config.yaml"))
    from snakemake.utils import validate
    validate(config, str(SCHEMA))
    base = training_settings(config, "digits", threat, "small_cnn")
    n_all = len(read_image_set(RESULTS / "synthetic/ddpm/selected/random.h5")[1])
    out = []
    for seed in seeds:
        out.append(dict(source="real", n_synthetic=0, seed=seed, settings=base))
        for n_syn, gamma in itertools.product([1000, n_all], [0.4, 0.7]):
            out.append(dict(source="real+synthetic", n_synthetic=n_syn, seed=seed, settings={**base, "gamma": gamma}))
        out.append(dict(source="real+synthetic", n_synthetic=n_all, seed=seed,
                        settings={**base, "gamma": 0.4, "epochs": 2 * base["epochs"]}))
    out.append(dict(source="real", n_synthetic=0, seed=seeds[0], settings={**base, "epochs": 2 * base["epochs"]}))
    out.append(dict(source="synthetic_only", n_synthetic=n_all, seed=seeds[0], settings=base))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threat", default="linf")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one_run, jobs(args.threat, args.seeds)))
    frame = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(frame.groupby(["source", "n_synthetic", "gamma", "epochs"])[["clean_acc", "pgd20_acc"]]
          .agg(["mean", "std", "count"]).round(4).to_string())


if __name__ == "__main__":
    main()
