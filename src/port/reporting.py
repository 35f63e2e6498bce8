"""Summary tables and plots: one row per training run (per radius for certification)."""

from __future__ import annotations

import pandas as pd

from .artifacts import atomic_path, read_csv, write_csv

SUMMARY_COLUMNS = ["method", "architecture", "n_synthetic", "gamma", "epochs", "seed", "norm", "eps",
                   "clean_acc", "pgd_acc", "autoattack_acc", "train_seconds", "n_test"]


def summarize(eval_csvs, out_csv) -> pd.DataFrame:
    frame = pd.concat([read_csv(path) for path in eval_csvs], ignore_index=True)
    missing = [c for c in SUMMARY_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"evaluation tables lack columns {missing}: {list(eval_csvs)}")
    rest = [c for c in frame.columns if c not in SUMMARY_COLUMNS]
    frame = frame[SUMMARY_COLUMNS + rest].sort_values(["architecture", "method", "seed"], kind="stable")
    write_csv(frame, out_csv)
    return frame


def summarize_certification(certificate_csvs, model_paths, rows, radii, sigma, out_csv, out_plot) -> pd.DataFrame:
    """Certified accuracy at each radius, per run (one row per run and radius), and its curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .models import load_model
    from .smoothing import certified_accuracy

    records, curves = [], []
    for csv, model_path, row in zip(certificate_csvs, model_paths, rows, strict=True):
        certificates = read_csv(csv)
        trained = load_model(model_path)[1]["metadata"]
        seconds = certificates["seconds"].sum()
        identity = {**row, "n_synthetic": trained.get("n_synthetic", 0), "sigma": sigma}
        shared = {"smoothed_clean_acc": float((certificates["smoothed_predict"] == certificates["label"]).mean()),
                  "abstain_rate": float((certificates["predict"] < 0).mean()), "n_certified": len(certificates),
                  "certify_seconds": float(seconds)}
        for radius, acc in zip(radii, certified_accuracy(certificates, radii)):
            records.append({**identity, "radius": radius, "certified_acc": acc, **shared})
        grid = np.linspace(0, max(max(radii), float(certificates["radius"].max())), 200)
        curves.append((f"{row['method']} {row['architecture']} seed {row['seed']}", grid,
                       certified_accuracy(certificates, grid)))
    table = pd.DataFrame(records)
    write_csv(table, out_csv)

    figure, axis = plt.subplots(figsize=(5, 3.5))
    for label, grid, accuracy in curves:
        axis.plot(grid, accuracy, label=label)
    axis.axvline(110 / 255, color="grey", linestyle=":", label="110/255 (~ linf 2/255)")
    axis.set(xlabel="l2 radius", ylabel="certified accuracy", title=f"Randomized smoothing, sigma = {sigma}")
    axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(out_plot) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
    return table
