"""A trained run in RobustBench's form: a JSON record of the result and the weights as a plain
state dict, so that `torch.load` plus the architecture (`port.models.build_model(**model_spec)`)
gives a model taking [0, 1] images, RobustBench's convention (normalisation is inside the model)."""

from __future__ import annotations

import json
import math

import torch

from .artifacts import atomic_path, read_csv
from .evaluation import AUTOATTACK_NORMS
from .models import load_model


def export_robustbench(*, model_path, eval_path, info_out, weights_out, run: str, dataset: str, run_config: dict) -> dict:
    """Write `info_out` (JSON: clean and AutoAttack accuracy in percent, threat model, eps,
    architecture, synthetic images and the near-duplicates of test images removed from them, the
    run's exact config) and `weights_out`. An accuracy the evaluation did not measure is null
    (strict JSON has no NaN), and `missing` says why."""
    model, spec = load_model(model_path)
    row = read_csv(eval_path).iloc[0]
    metadata = spec.pop("metadata")
    accuracies = {key: float(row[key]) for key in ("clean_acc", "pgd_acc", "autoattack_acc")}
    missing = {key: (f"AutoAttack was not run: the run's evaluation.autoattack is false ({eval_path})"
                     if key == "autoattack_acc" and row["autoattack_attacks"] == "none"
                     else f"not measured: {eval_path} has no value ({row['n_test']} test images)")
               for key, value in accuracies.items() if math.isnan(value)}
    info = {
        "name": run, "dataset": dataset, "threat_model": AUTOATTACK_NORMS[row["norm"]], "eps": float(row["eps"]),
        "architecture": spec["arch"], "model_spec": spec, "weights": str(weights_out),
        **{key: None if key in missing else round(100 * value, 2) for key, value in accuracies.items()},
        "missing": missing, "n_test": int(row["n_test"]),
        "autoattack_attacks": row["autoattack_attacks"],  # RobustBench lists "standard" results only
        "additional_data": int(metadata.get("n_synthetic", 0)) > 0, "n_synthetic": int(metadata.get("n_synthetic", 0)),
        "n_test_duplicates_removed": metadata.get("test_duplicates_removed"),
        "number_forward_passes": 1, "config": run_config,
        # a mixture's members and their image counts (port.mixture), as the trained model recorded them
        **({"generator_shares": metadata["generator_shares"]} if "generator_shares" in metadata else {}),
    }
    # A plain state dict, without the pipeline's checksum key, so that load_state_dict takes it as is.
    with atomic_path(weights_out) as tmp:
        torch.save(model.state_dict(), tmp)
    with atomic_path(info_out) as tmp:
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return info
