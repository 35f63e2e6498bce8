"""Few-step samplers against the full DDPM chain on digits: is 10 or 20 steps good enough?

For each sampler (the 100-step DDPM chain, and DPM-Solver++, UniPC and DDIM at 10 and 20 steps)
the digits DDPM of a pipeline run samples the same global image indices (so the same initial
noise), and each set gets:
- the Frechet distance in the lanet labeler's feature space to the real training set, and to the
  full chain's images (as the generator ranking measures it);
- the filter's keep rate (the pipeline's rule and threshold, with both labelers);
- transferred robustness: PGD-20 accuracy on the real test set of a classifier adversarially
  trained on that sampler's filtered images alone (the pipeline's transfer settings);
- the CPU seconds sampling took.

Reads the DDPM and the labelers of a digits run (`snakemake results/digits/diffusion/ddpm
results/digits/labelers/lanet/model.pt results/digits/labelers/splitnet/model.pt` is enough):

    nice python bench/few_step_quality.py --results results/digits --out bench/results/few_step_quality.csv
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from port.artifacts import provenance, read_attrs, read_image_set, write_csv, write_images
from port.attacks import Attack
from port.settings.discrimination import transfer_settings
from port.evaluation import accuracy
from port.generators import Sampler
from port.labeling import keep_mask
from port.loaders import to_tensor
from port.models import load_model
from port.ranking import frechet_distance, penultimate_features
from port.training import train

SAMPLERS = [("ddpm", 100), ("dpmsolver++", 10), ("dpmsolver++", 20), ("unipc", 10), ("unipc", 20), ("ddim", 10),
            ("ddim", 20)]
CONFIG = Path(__file__).resolve().parent.parent / "config" / "config.yaml"


def probabilities(model, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(to_tensor(images)), 1).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results/digits", help="a digits run's results folder")
    p.add_argument("--out", default="bench/results/few_step_quality.csv")
    p.add_argument("--n-images", type=int, default=3000, help="images per sampler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--transfer-epochs", type=int, default=None, help="default: generator_ranking.epochs")
    args = p.parse_args()

    config = yaml.safe_load(CONFIG.read_text())
    ds = config["datasets"]["digits"]
    results = Path(args.results)
    real, _ = read_image_set(results / "data" / "train.h5")
    test_x, test_y = read_image_set(results / "data" / "test.h5")
    train_attrs = {k: v for k, v in read_attrs(results / "data" / "train.h5").items()
                   if k in ("num_classes", "channel_mean", "channel_std", "dataset")}
    lanet, _ = load_model(results / "labelers" / "lanet" / "model.pt")
    splitnet, _ = load_model(results / "labelers" / "splitnet" / "model.pt")
    real_features = penultimate_features(lanet, real)
    settings = transfer_settings(config, "digits")
    if args.transfer_epochs:
        settings["epochs"] = args.transfer_epochs
    threat = ds["threats"][ds["generator_ranking"]["threat"]]
    attack = Attack.from_settings(threat)
    x_test, y_test = to_tensor(test_x), torch.from_numpy(test_y)

    rows, chain_features = [], None
    for name, steps in SAMPLERS:
        sampler = Sampler.from_pretrained(str(results / "diffusion" / "ddpm"), {"scheduler": name, "steps": steps})
        cpu = time.process_time()
        images = np.concatenate([sampler.uint8_images(args.seed, range(i, min(i + 500, args.n_images)))
                                 for i in range(0, args.n_images, 500)])
        sample_cpu = time.process_time() - cpu
        features = penultimate_features(lanet, images)
        chain_features = features if chain_features is None else chain_features
        p_lanet, p_split = probabilities(lanet, images), probabilities(splitnet, images)
        keep = keep_mask(p_lanet.argmax(1), p_lanet.max(1), p_split.argmax(1), p_split.max(1),
                         ds["filter"]["threshold"])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            n_train = min(int(keep.sum()), ds["generator_ranking"]["n_train"])
            write_images(tmp / "train.h5", images[keep][:n_train], {**provenance("few-step"), **train_attrs},
                         labels=p_lanet.argmax(1)[keep][:n_train].astype(np.int64))
            train(train_path=tmp / "train.h5", model_out=tmp / "model.pt", history_out=tmp / "history.csv",
                  checkpoint_path=tmp / "checkpoint.pt", settings=dict(settings), seed=args.seed, progress=False)
            model, _ = load_model(tmp / "model.pt")
        torch.manual_seed(args.seed)
        row = dict(scheduler=name, steps=steps, n_images=len(images), seed=args.seed, sample_cpu_seconds=sample_cpu,
                   frechet_lanet_real=frechet_distance(features, real_features),
                   frechet_lanet_vs_chain=frechet_distance(features, chain_features),
                   keep_rate=float(keep.mean()), n_transfer_train=n_train, transfer_epochs=settings["epochs"],
                   transfer_clean_acc=accuracy(model, x_test, y_test),
                   transfer_robust_acc=accuracy(model, x_test, y_test, attack, attack_steps=20))
        print(row, flush=True)
        rows.append(row)
        write_csv(pd.DataFrame(rows), args.out)


if __name__ == "__main__":
    main()
