"""Summary tables and plots: one row per training run (per radius for certification)."""

from __future__ import annotations

import pandas as pd

from . import paths
from .artifacts import atomic_path, open_hdf5, read_csv, write_csv

SUMMARY_COLUMNS = ["method", "selection", "architecture", "n_synthetic", "n_synthetic_used",
                   "n_test_duplicates_removed", "gamma", "epochs", "seed", "norm", "eps",
                   "clean_acc", "pgd_acc", "autoattack_acc", "autoattack_attacks", "train_seconds", "n_test"]


def figure_axes(*args, **kwargs):
    """matplotlib subplots on the file-only Agg backend (jobs have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(figure, out_png, dpi: int = 110) -> None:
    """Lay out, write atomically as PNG, and free the figure."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    plt.close(figure)


SEED_METRICS = ["clean_acc", "pgd_acc", "autoattack_acc"]  # the accuracies a run table reports
THREAT_KEYS = ["norm", "eps"]  # what tells the threat models of a run table apart


def run_table(eval_csvs) -> pd.DataFrame:
    """One row per run (the runs' eval.csv files), identity columns first."""
    frame = pd.concat([read_csv(path) for path in eval_csvs], ignore_index=True)
    missing = [c for c in SUMMARY_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"evaluation tables lack columns {missing}: {list(eval_csvs)}")
    rest = [c for c in frame.columns if c not in SUMMARY_COLUMNS]
    return frame[SUMMARY_COLUMNS + rest].sort_values(["norm", "eps", "architecture", "method", "selection", "seed"],
                                                     kind="stable")


def seed_table(runs: pd.DataFrame, metrics: list[str], setting: list[str]) -> pd.DataFrame:
    """Per `setting` (threat model, certification radius), run (method and selection) and
    architecture, and per metric: n_seeds, mean, sd and 95% t-interval over seeds; and beside each
    PORT run its paired difference from the baseline (same setting, architecture and seed) with
    its interval and verdict. One seed gives NaN intervals and says so in the verdict."""
    from .statistics import paired_differences, seed_summary, with_differences

    metrics = [m for m in metrics if m in runs.columns and runs[m].notna().any()]
    run = [paths.run_name(None if method == paths.BASELINE else selection)
           for method, selection in zip(runs["method"], runs["selection"])]
    runs = runs.assign(run=run)
    # the selected set, and so the near-duplicates removed from it, is the same for every training seed;
    # a mixture's runs name it and its members' shares (port.mixture); the baseline's are empty
    identity = [*setting, "architecture", "method", "selection",
                *[key for key in ("n_test_duplicates_removed", "generator", "generator_shares") if key in runs.columns]]
    summary = seed_summary(runs, metrics, [*identity, "run"])
    differences = paired_differences(runs, metrics, method="run", baseline=paths.BASELINE,
                                     pair_on=(*setting, "architecture", "seed"), by=(*setting, "architecture"))
    table = with_differences(summary, differences, on=[*setting, "architecture", "run", "metric"])
    return table.drop(columns="run").sort_values(identity, kind="stable").reset_index(drop=True)


def summarize(*, eval_csvs, out_csv, out_summary) -> pd.DataFrame:
    """A threat model's run table (`port_{threat}.csv`, one row per run and seed) and its seed
    summary (`summary_{threat}.csv`, see seed_table)."""
    frame = run_table(eval_csvs)
    write_csv(frame, out_csv)
    write_csv(seed_table(frame, SEED_METRICS, THREAT_KEYS), out_summary)
    return frame


def summarize_seed_study(*, eval_csvs, out_csv) -> pd.DataFrame:
    """The seed study (`seeds.csv`): the baseline and PORT runs of every threat model over the
    study's seeds, summarised as seed_table does, one threat model per (norm, eps)."""
    table = seed_table(run_table(eval_csvs), SEED_METRICS, THREAT_KEYS)
    write_csv(table, out_csv)
    return table


def summarize_certification(*, certificate_csvs, model_paths, rows, radii, sigma, out_csv, out_summary,
                            out_plot) -> pd.DataFrame:
    """Certified accuracy at each radius, per run (one row per run and radius), its seed summary
    per radius (`out_summary`, see seed_table), and its curve."""
    import numpy as np

    from .models import load_model, training_record
    from .smoothing import certified_accuracy

    records, curves = [], []
    for csv, model_path, row in zip(certificate_csvs, model_paths, rows, strict=True):
        certificates = read_csv(csv)
        trained = load_model(model_path)[1]["metadata"]
        seconds = certificates["seconds"].sum()
        identity = {**row, **training_record(trained), "sigma": sigma}
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
    write_csv(seed_table(table, ["certified_acc"], ["radius"]), out_summary)

    figure, axis = figure_axes(figsize=(5, 3.5))
    for label, grid, accuracy in curves:
        axis.plot(grid, accuracy, label=label)
    axis.axvline(110 / 255, color="grey", linestyle=":", label="110/255 (~ linf 2/255)")
    axis.set(xlabel="l2 radius", ylabel="certified accuracy", title=f"Randomized smoothing, sigma = {sigma}")
    axis.legend(fontsize=7)
    save_figure(figure, out_plot, dpi=120)
    return table


def _image_grid(images, titles, columns: int, out_png, title: str) -> None:
    rows = max(1, -(-len(images) // columns))
    figure, axes = figure_axes(rows, columns, figsize=(columns * 0.9, rows * 1.0 + 0.4), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, titles):
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
        axis.set_title(caption, fontsize=6)
    figure.suptitle(title, fontsize=9)
    save_figure(figure, out_png, dpi=110)


def plot_synthetic_grids(*, images_path, labels_path, filter_path, per_class_png, discarded_png, per_class: int,
                         seed: int) -> None:
    """Kept synthetic images per pseudo-label class, and discarded ones with both labelers'
    answers (the paper's Figure 5d): a quick visual check of the generator and the filter."""
    import numpy as np

    from .artifacts import read_arrays
    from .seeds import rng

    arrays = read_arrays(labels_path, "labels", "lanet_probs", "splitnet_probs")
    keep = read_arrays(filter_path, "keep")["keep"]
    labels, num_classes = arrays["labels"], arrays["lanet_probs"].shape[1]
    generator = rng(seed, "report-grid")
    kept = [np.sort(generator.permutation(np.flatnonzero(keep & (labels == c)))[:per_class])
            for c in range(num_classes)]
    discarded = np.sort(generator.permutation(np.flatnonzero(~keep))[:per_class * 4])
    with open_hdf5(images_path) as handle:
        images = handle["images"]
        grid = [(images[i], f"class {c}") for c, idx in enumerate(kept) for i in idx]
        _image_grid([g[0] for g in grid], [g[1] for g in grid], per_class, per_class_png,
                    "synthetic images that passed the filter, by pseudo-label")
        lanet, splitnet = arrays["lanet_probs"][discarded], arrays["splitnet_probs"][discarded]
        titles = [f"{a.argmax()} ({a.max():.2f}) / {b.argmax()} ({b.max():.2f})" for a, b in zip(lanet, splitnet)]
        _image_grid([images[i] for i in discarded], titles, per_class, discarded_png,
                    f"discarded: {int((~keep).sum())} of {len(keep)} (lanet / splitnet class and confidence)")


def plot_training_curves(*, history_csvs, run_labels, out_png) -> None:
    """Validation clean and robust accuracy per epoch for every run of one threat model."""
    figure, (clean, robust) = figure_axes(1, 2, figsize=(8, 3.2), sharex=True)
    for csv, label in zip(history_csvs, run_labels, strict=True):
        history = read_csv(csv)
        clean.plot(history["epoch"], history["val_clean_acc"], label=label)
        robust.plot(history["epoch"], history["val_robust_acc"], label=label)
    clean.set(xlabel="epoch", ylabel="accuracy", title="validation, clean")
    robust.set(xlabel="epoch", title="validation, robust (PGD or noise)")
    robust.legend(fontsize=7)
    save_figure(figure, out_png, dpi=110)


def summarize_score_groups(*, eval_csvs, selected_paths, out_csv, out_png) -> pd.DataFrame:
    """Robust accuracy of PORT trained on each score group (lowest scores first; paper Figure 5)."""
    from .artifacts import read_arrays

    rows = []
    for group, (csv, selected) in enumerate(zip(eval_csvs, selected_paths, strict=True)):
        scores = read_arrays(selected, "score")["score"]
        rows.append({"group": group, "n_images": len(scores), "score_mean": float(scores.mean()),
                     "score_min": float(scores.min()), "score_max": float(scores.max()),
                     **read_csv(csv).iloc[0].to_dict()})
    table = pd.DataFrame(rows)
    write_csv(table, out_csv)
    figure, axis = figure_axes(figsize=(5, 3.2))
    axis.plot(table["group"], table["pgd_acc"], marker="o", label="PGD accuracy")
    axis.plot(table["group"], table["clean_acc"], marker="s", label="clean accuracy")
    axis.set(xlabel="score group (0 = lowest synthetic scores)", ylabel="test accuracy",
             xticks=table["group"], title="PORT per synthetic-score group")
    axis.legend(fontsize=7)
    save_figure(figure, out_png, dpi=110)
    return table


def plot_arc_curves(curves, arc_by_generator: dict, out_png) -> None:
    """Robust discrimination accuracy against eps in 1/255, one line per generator: the mean over
    discriminator seeds, with the seeds' standard deviation as error bars when there are several
    (the paper's Figure 3). Points where a seed's discriminator collapsed are crossed out."""
    figure, axis = figure_axes(figsize=(5, 3.5))
    for curve in curves:
        name = curve["generator"].iloc[0]
        by_eps = curve.groupby("eps_255", sort=True)
        mean, n_seeds = by_eps["robust_acc"].mean(), curve["seed"].nunique()
        spread = by_eps["robust_acc"].std(ddof=1) if n_seeds > 1 else None
        line = axis.errorbar(mean.index, mean.to_numpy(), yerr=spread, marker="o", capsize=3,
                             label=f"{name} (ARC {arc_by_generator[name]:.3f}, {n_seeds} seed{'s' * (n_seeds > 1)})")
        collapsed = by_eps["collapsed"].any()
        if collapsed.any():
            axis.plot(mean.index[collapsed.to_numpy()], mean[collapsed].to_numpy(), linestyle="", marker="x",
                      markersize=10, color=line.lines[0].get_color(), label=f"{name}: collapsed to chance")
    axis.axhline(0.5, color="grey", linestyle=":")
    axis.set(xlabel="linf eps (units of 1/255)", ylabel="robust discrimination accuracy", ylim=(0.0, 1.02),
             title="Robust discrimination (real vs synthetic)")
    axis.legend(fontsize=7)
    save_figure(figure, out_png, dpi=120)


def summarize_recipe(*, eval_csvs, out_csv, out_summary) -> pd.DataFrame:
    """The recipe study: every run (`out_csv`), and per variant and metric the mean, sd and 95%
    t-interval over seeds, with the paired difference (same architecture and seed) from the
    variant listed before it; an interval covering zero is reported as no difference."""
    from .statistics import paired_differences, seed_summary, with_differences

    runs = pd.concat([read_csv(path) for path in eval_csvs], ignore_index=True)
    write_csv(runs, out_csv)
    variants = list(dict.fromkeys(runs["variant"]))
    summary = seed_summary(runs, SEED_METRICS, ["architecture", "variant"])
    steps = [paired_differences(runs[runs["variant"].isin(pair)], SEED_METRICS, method="variant", baseline=pair[0])
             for pair in zip(variants, variants[1:])]
    if steps:
        summary = with_differences(summary, pd.concat(steps, ignore_index=True), ["architecture", "variant", "metric"])
    order = {name: i for i, name in enumerate(variants)}
    summary = summary.sort_values(["architecture", "variant", "metric"], key=lambda c: c.map(order) if c.name == "variant"
                                  else c, kind="stable")
    write_csv(summary, out_summary)
    return summary
