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


T_975_2 = 4.302653  # Student t, 97.5% quantile, 2 degrees of freedom (3 seeds)


def _threat_runs(seeds=(0, 1, 2)):
    """Rows of a port_{threat}.csv: the baseline, PORT adaptive (baseline + 0.06, 0.05, 0.04 per seed)
    and PORT random (baseline + 0.02, -0.03, 0.01), PGD accuracy known by hand; AutoAttack not run."""
    base = {0: 0.40, 1: 0.45, 2: 0.50}
    gains = {"adaptive": {0: 0.06, 1: 0.05, 2: 0.04}, "random": {0: 0.02, 1: -0.03, 2: 0.01}}
    rows = [{"method": "baseline", "selection": "none", "architecture": "cnn", "seed": s, "norm": "linf", "eps": 0.1,
             "clean_acc": 0.9, "pgd_acc": base[s], "autoattack_acc": np.nan, "n_test_duplicates_removed": 0}
            for s in seeds]
    rows += [{**row, "method": "port", "selection": selection, "pgd_acc": row["pgd_acc"] + gain[row["seed"]],
              "n_test_duplicates_removed": 7} for selection, gain in gains.items() for row in rows[:len(seeds)]]
    return pd.DataFrame(rows)


def test_seed_table_against_a_hand_computation():
    from port.reporting import SEED_METRICS, THREAT_KEYS, seed_table

    table = seed_table(_threat_runs(), SEED_METRICS, THREAT_KEYS)
    assert set(table["metric"]) == {"clean_acc", "pgd_acc"}  # AutoAttack was not run: no rows for it
    pgd = table[table["metric"] == "pgd_acc"].set_index("selection")
    assert pgd.loc["none", "method"] == "baseline" and (pgd["n_seeds"] == 3).all()
    # baseline: mean 0.45, sd 0.05, half width t * sd / sqrt(3)
    assert pgd.loc["none", "mean"] == pytest.approx(0.45) and pgd.loc["none", "sd"] == pytest.approx(0.05)
    assert pgd.loc["none", "ci_high"] - 0.45 == pytest.approx(T_975_2 * 0.05 / np.sqrt(3), rel=1e-6)
    assert pd.isna(pgd.loc["none", "verdict"])  # the baseline is compared to nothing
    # adaptive - baseline per seed: 0.06, 0.05, 0.04 -> mean 0.05, sd 0.01: higher beyond seed noise
    adaptive = pgd.loc["adaptive"]
    assert adaptive["mean"] == pytest.approx(0.50) and adaptive["mean_difference"] == pytest.approx(0.05)
    assert adaptive["difference_ci_low"] == pytest.approx(0.05 - T_975_2 * 0.01 / np.sqrt(3), rel=1e-6)
    assert adaptive["verdict"] == "higher" and adaptive["compared_to"] == "baseline" and adaptive["n_pairs"] == 3
    # the summary says how many near-duplicates of test images the selection removed
    assert adaptive["n_test_duplicates_removed"] == 7 and pgd.loc["none", "n_test_duplicates_removed"] == 0
    # ...while its unpaired interval overlaps the baseline's
    assert adaptive["ci_low"] < pgd.loc["none", "ci_high"]
    # random - baseline: 0.02, -0.03, 0.01 -> mean 0, an interval over zero
    random = pgd.loc["random"]
    assert random["mean_difference"] == pytest.approx(0.0, abs=1e-12)
    assert random["difference_ci_low"] < 0 < random["difference_ci_high"] and random["verdict"] == NO_DIFFERENCE


def test_one_seed_gives_no_interval_and_a_verdict_that_says_so():
    from port.reporting import SEED_METRICS, THREAT_KEYS, seed_table
    from port.statistics import NO_INTERVAL

    table = seed_table(_threat_runs(seeds=(1,)), SEED_METRICS, THREAT_KEYS)
    pgd = table[table["metric"] == "pgd_acc"].set_index("selection")
    assert (pgd["n_seeds"] == 1).all() and pgd[["sd", "ci_low", "ci_high"]].isna().all().all()
    assert pgd.loc["adaptive", "mean_difference"] == pytest.approx(0.05)  # measured, but...
    assert pd.isna(pgd.loc["adaptive", "difference_ci_low"]) and pd.isna(pgd.loc["adaptive", "difference_ci_high"])
    assert pgd.loc["adaptive", "verdict"] == NO_INTERVAL == pgd.loc["random", "verdict"]  # ...never a finding


def test_summarize_writes_the_run_table_and_its_seed_summary(tmp_path):
    from port.artifacts import write_csv
    from port.reporting import SUMMARY_COLUMNS, summarize

    runs = _threat_runs()
    for column in SUMMARY_COLUMNS:
        runs[column] = runs.get(column, 0)
    paths = []
    for i, row in runs.iterrows():
        paths.append(tmp_path / f"eval{i}.csv")
        write_csv(pd.DataFrame([row]), paths[-1])
    summarize(eval_csvs=paths, out_csv=tmp_path / "port_linf.csv", out_summary=tmp_path / "summary_linf.csv")
    assert len(pd.read_csv(tmp_path / "port_linf.csv")) == 9  # one row per run and seed
    summary = pd.read_csv(tmp_path / "summary_linf.csv")
    row = summary[(summary["selection"] == "adaptive") & (summary["metric"] == "pgd_acc")].iloc[0]
    assert row["verdict"] == "higher" and row["norm"] == "linf" and row["eps"] == 0.1


def test_seed_study_keeps_threat_models_apart():
    from port.reporting import SEED_METRICS, THREAT_KEYS, seed_table

    linf = _threat_runs()
    l2 = linf.assign(norm="l2", eps=1.0, pgd_acc=linf["pgd_acc"] - 0.2)
    table = seed_table(pd.concat([linf, l2]), SEED_METRICS, THREAT_KEYS)
    pgd = table[(table["metric"] == "pgd_acc") & (table["selection"] == "adaptive")].set_index("norm")
    assert pgd.loc["l2", "mean"] == pytest.approx(0.30) and pgd.loc["linf", "mean"] == pytest.approx(0.50)
    assert (pgd["n_pairs"] == 3).all() and pgd["mean_difference"].to_numpy() == pytest.approx([0.05, 0.05])


def test_certified_accuracy_is_summarised_per_radius():
    from port.reporting import seed_table

    rows = [{"method": method, "selection": selection, "architecture": "cnn", "seed": seed, "radius": radius,
             "n_test_duplicates_removed": 0, "certified_acc": acc + (0.1 if method == "port" else 0.0) * (radius > 0) + 0.01 * seed}
            for method, selection in (("baseline", "none"), ("port", "adaptive")) for seed in (0, 1)
            for radius, acc in ((0.0, 0.8), (0.5, 0.4))]
    table = seed_table(pd.DataFrame(rows), ["certified_acc"], ["radius"]).set_index(["radius", "selection"])
    assert table.loc[(0.5, "none"), "mean"] == pytest.approx(0.405) and table.loc[(0.5, "none"), "n_seeds"] == 2
    assert table.loc[(0.0, "adaptive"), "mean_difference"] == pytest.approx(0.0)
    assert table.loc[(0.5, "adaptive"), "mean_difference"] == pytest.approx(0.1)
    # the same +0.1 on both seeds: sd 0, a zero-width interval above zero
    assert table.loc[(0.5, "adaptive"), "verdict"] == "higher"
