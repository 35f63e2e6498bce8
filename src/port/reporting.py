"""Summary tables: one row per training run, gathered from the per-run evaluation CSVs."""

from __future__ import annotations

import pandas as pd

from .artifacts import read_csv, write_csv

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
