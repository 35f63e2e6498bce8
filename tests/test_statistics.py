import numpy as np
import pandas as pd
import pytest

from port.statistics import NO_DIFFERENCE, paired_differences, seed_summary, t_interval, verdict


def test_t_interval_matches_the_textbook_value():
    mean, sd, low, high, n = t_interval([1.0, 2.0, 3.0])
    # t_{0.975, 2} = 4.302653; sd = 1; half width = 4.302653 / sqrt(3)
    assert (mean, sd, n) == (2.0, 1.0, 3)
    assert high - mean == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    assert mean - low == pytest.approx(high - mean)


def test_one_seed_has_no_interval_and_never_a_verdict():
    mean, sd, low, high, n = t_interval([0.7])
    assert mean == 0.7 and n == 1 and np.isnan(sd) and np.isnan(low) and np.isnan(high)
    assert verdict(low, high) == NO_DIFFERENCE


@pytest.mark.parametrize("low,high,expected", [(0.01, 0.05, "higher"), (-0.05, -0.01, "lower"),
                                               (-0.01, 0.05, NO_DIFFERENCE), (0.0, 0.1, NO_DIFFERENCE)])
def test_verdict(low, high, expected):
    assert verdict(low, high) == expected


def _runs():
    seeds = [0, 1, 2]
    base = [0.40, 0.45, 0.50]
    rows = [{"run": "baseline", "architecture": "cnn", "seed": s, "pgd_acc": b} for s, b in zip(seeds, base)]
    # PORT is baseline + 0.05 on each seed (a clear paired gain despite the spread over seeds);
    # random is baseline + noise around zero.
    rows += [{"run": "port-adaptive", "architecture": "cnn", "seed": s, "pgd_acc": b + 0.05} for s, b in zip(seeds, base)]
    rows += [{"run": "port-random", "architecture": "cnn", "seed": s, "pgd_acc": b + d}
             for s, b, d in zip(seeds, base, [0.02, -0.03, 0.01])]
    return pd.DataFrame(rows)


def test_seed_summary_is_tidy_per_group_and_metric():
    table = seed_summary(_runs(), ["pgd_acc"], ["run", "architecture"])
    assert list(table["run"]) == ["baseline", "port-adaptive", "port-random"]
    assert table["n_seeds"].tolist() == [3, 3, 3]
    assert table.loc[0, "mean"] == pytest.approx(0.45)
    # The unpaired intervals of baseline and PORT overlap...
    assert table.loc[1, "ci_low"] < table.loc[0, "ci_high"]


def test_paired_difference_sees_what_the_unpaired_intervals_hide():
    table = paired_differences(_runs(), ["pgd_acc"], method="run").set_index("run")
    # ...but pairing on seed removes the shared spread: +0.05 on every seed.
    assert table.loc["port-adaptive", "mean_difference"] == pytest.approx(0.05)
    assert table.loc["port-adaptive", "verdict"] == "higher"
    assert table.loc["port-random", "verdict"] == NO_DIFFERENCE
    assert table.loc["port-random", "n_pairs"] == 3


def test_pairs_only_matching_seeds():
    runs = _runs()
    runs = runs[~((runs["run"] == "baseline") & (runs["seed"] == 2))]
    table = paired_differences(runs, ["pgd_acc"], method="run").set_index("run")
    assert table.loc["port-adaptive", "n_pairs"] == 2
