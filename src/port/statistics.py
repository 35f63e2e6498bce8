"""Results that survive noise: per-method mean, standard deviation and a 95% t-interval over
training seeds, and the paired difference of each method from the baseline (same architecture and
seed, so the seed-to-seed variation both share cancels). A difference whose interval covers zero is
reported as no difference."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import stdtrit  # the t quantile; scipy.stats costs every job 0.3 s more to import

CONFIDENCE = 0.95
NO_DIFFERENCE = "no difference"
NO_INTERVAL = "no interval (fewer than two seeds)"


def t_interval(values) -> tuple[float, float, float, float, int]:
    """Mean, sample standard deviation and the two-sided 95% Student-t interval of the mean.

    With one value the spread is unknown: sd and the interval are NaN rather than zero, so a
    single seed can never look like a significant result.
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    n = len(values)
    if n == 0:
        return (np.nan,) * 4 + (0,)
    mean = float(values.mean())
    if n == 1:
        return mean, np.nan, np.nan, np.nan, 1
    sd = float(values.std(ddof=1))
    half = float(stdtrit(n - 1, 0.5 + CONFIDENCE / 2)) * sd / np.sqrt(n)
    return mean, sd, mean - half, mean + half, n


def verdict(low: float, high: float) -> str:
    """'higher', 'lower', or no difference when the interval covers zero (or is unknown)."""
    if np.isnan(low) or np.isnan(high) or low <= 0 <= high:
        return NO_DIFFERENCE
    return "higher" if low > 0 else "lower"


def seed_summary(frame: pd.DataFrame, metrics: list[str], by: list[str]) -> pd.DataFrame:
    """One row per group and metric: n_seeds, mean, sd, ci_low, ci_high (tidy)."""
    records = []
    for keys, group in frame.groupby(by, sort=True, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        for metric in metrics:
            mean, sd, low, high, n = t_interval(group[metric])
            records.append({**dict(zip(by, keys)), "metric": metric, "n_seeds": n, "mean": mean, "sd": sd,
                            "ci_low": low, "ci_high": high})
    return pd.DataFrame(records)


def paired_differences(frame: pd.DataFrame, metrics: list[str], method: str = "method",
                       baseline: str = "baseline", pair_on: tuple[str, ...] = ("architecture", "seed"),
                       by: tuple[str, ...] = ("architecture",)) -> pd.DataFrame:
    """Each non-baseline method minus the baseline, paired on `pair_on`, summarised per `by` group."""
    base = frame[frame[method] == baseline]
    records = []
    for name, runs in frame[frame[method] != baseline].groupby(method, sort=True):
        paired = runs.merge(base, on=list(pair_on), suffixes=("", "_baseline"))
        for keys, group in paired.groupby(list(by), sort=True):
            keys = keys if isinstance(keys, tuple) else (keys,)
            for metric in metrics:
                mean, sd, low, high, n = t_interval(group[metric] - group[f"{metric}_baseline"])
                records.append({method: name, **dict(zip(by, keys)), "metric": metric,
                                "compared_to": baseline, "n_pairs": n, "mean_difference": mean, "sd": sd,
                                "ci_low": low, "ci_high": high,
                                "verdict": verdict(low, high) if n >= 2 else NO_INTERVAL})
    return pd.DataFrame(records)


def with_differences(summary: pd.DataFrame, differences: pd.DataFrame, on: list[str]) -> pd.DataFrame:
    """A seed_summary table with the paired differences (paired_differences) beside the rows they
    belong to: `n_pairs`, `mean_difference`, its interval `difference_ci_low`/`difference_ci_high`,
    `verdict`, `compared_to`; empty for the rows that are compared to nothing (the baseline)."""
    if not len(differences):
        return summary
    differences = differences.drop(columns=["sd"]).rename(columns={"ci_low": "difference_ci_low",
                                                                   "ci_high": "difference_ci_high"})
    return summary.merge(differences, on=on, how="left")
