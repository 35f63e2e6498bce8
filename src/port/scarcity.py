"""Where proxy data pays: the real training set cut to n_real images, and at each cut the
baseline against PORT (rules/scarcity.smk). The paper's argument is one of sample complexity:
adversarial training needs more data than standard training, so synthetic images should help most
where real ones are scarce, and show it as a smaller robust generalization gap (robust accuracy
on the training images minus robust accuracy on the test set).

At each cut the generator, the labelers and the scorers are trained on the cut alone (the proxy
comes from the same real data), by the pipeline's own stages; this module makes the cut and the
study's table and plot.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .artifacts import (dataset_of, image_set_length, provenance, read_attrs, read_csv, read_image_set, write_csv,
                        write_images)
from .errors import ArtifactError, SettingsError
from .data import channel_stats
from .reporting import SEED_METRICS, THREAT_KEYS, figure_axes, save_figure, seed_table
from .seeds import rng

log = logging.getLogger(__name__)
# Robust accuracy is PGD-20 on both sides of the gap (AutoAttack on the training images would
# double the study's evaluation cost).
TRAIN_METRICS = {"clean_acc": "clean_train_acc", "pgd_acc": "robust_train_acc"}
STUDY_METRICS = [*SEED_METRICS, "clean_train_acc", "robust_train_acc", "robust_gap"]


def stratified_cut(labels: np.ndarray, n_real: int, seed: int) -> np.ndarray:
    """Sorted indices of n_real images, class-balanced: n_real // C of every class and one more of
    n_real % C classes (a seeded choice), each class's images in a seeded order. The same seed
    gives nested cuts: every smaller cut is a subset of every larger one."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if not 0 < n_real <= len(labels):
        raise SettingsError(f"studies.data_scarcity.sizes: a cut of {n_real} images out of {len(labels)}")
    generator = rng(seed, "data-scarcity")
    extra = set(generator.permutation(classes)[:n_real % len(classes)].tolist())
    chosen = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        quota = n_real // len(classes) + (label in extra)
        if quota > len(members):
            raise SettingsError(f"studies.data_scarcity.sizes: a balanced cut of {n_real} images needs {quota} of "
                                f"class {label}, the training set has {len(members)}")
        chosen.append(rng(seed, "data-scarcity", int(label)).permutation(members)[:quota])
    return np.sort(np.concatenate(chosen))


def cut_training_set(*, train_path, out_path, n_real: int, seed: int) -> int:
    """The cut as an image set of its own, with its own channel statistics (the classifiers
    normalise with them: a study point knows only its n_real images) and each image's index in
    the full training set (`source_index`)."""
    attrs = read_attrs(train_path)
    images, labels = read_image_set(train_path, int(attrs["num_classes"]))
    chosen = stratified_cut(labels, n_real, seed)
    mean, std = channel_stats(images[chosen])
    write_images(out_path, images[chosen],
                 provenance("data_scarcity_cut", {"n_real": n_real}, seed, dataset=dataset_of(train_path),
                            num_classes=int(attrs["num_classes"]), channel_mean=mean, channel_std=std),
                 labels=labels[chosen], source_index=chosen)
    log.info("cut of %d images: %s per class", len(chosen), np.bincount(labels[chosen]).tolist())
    return len(chosen)


def study_runs(eval_csvs, train_eval_csvs, train_sets, model_paths) -> pd.DataFrame:
    """One row per run: its test evaluation, its clean and robust accuracy on the images it trained
    on, the gap robust_train_acc - pgd_acc, n_real (the images of its training set) and the
    optimizer steps it took (the model's metadata). The four lists are parallel, one entry per run."""
    from .models import checkpoint_spec  # torch: not for the cut's job

    if not len(eval_csvs) == len(train_eval_csvs) == len(train_sets) == len(model_paths):
        raise ArtifactError(f"data-scarcity study: {len(eval_csvs)} test evaluations, {len(train_eval_csvs)} "
                            f"training-set evaluations, {len(train_sets)} training sets, {len(model_paths)} models")
    rows = []
    for test_csv, train_csv, train_set, model_path in zip(eval_csvs, train_eval_csvs, train_sets, model_paths):
        on_test, on_train = read_csv(test_csv).iloc[0].to_dict(), read_csv(train_csv).iloc[0]
        rows.append({**on_test, **{new: on_train[old] for old, new in TRAIN_METRICS.items()},
                     "n_real": image_set_length(train_set),
                     "steps": checkpoint_spec(model_path)[0].get("metadata", {}).get("steps")})
    runs = pd.DataFrame(rows)
    runs["robust_gap"] = runs["robust_train_acc"] - runs["pgd_acc"]
    return runs


def data_scarcity_study(*, eval_csvs, train_eval_csvs, train_sets, model_paths, out_csv, out_plot) -> pd.DataFrame:
    """Per threat model, n_real, run and metric (STUDY_METRICS): mean, sd and 95% interval over
    seeds, and each PORT run's paired difference from the baseline (same n_real and seed) with its
    verdict, as seeds.csv has them; the plot draws robust test accuracy and the gap against n_real."""
    runs = study_runs(eval_csvs, train_eval_csvs, train_sets, model_paths)
    steps = runs.groupby("n_real")["steps"].agg(["min", "max"]).rename(columns=lambda c: f"{c}_steps")
    table = seed_table(runs, STUDY_METRICS, [*THREAT_KEYS, "n_real"]).merge(steps, on="n_real", how="left")
    write_csv(table, out_csv)
    _plot(table, out_plot)
    return table


def _plot(table: pd.DataFrame, out_plot) -> None:
    """Two panels against n_real (log axis): AutoAttack test accuracy and the robust generalization
    gap, one line per run with its 95% interval as a band (none with one seed)."""
    from matplotlib.ticker import NullFormatter

    panels = [("autoattack_acc", "AutoAttack test accuracy"), ("robust_gap", "robust train - test (PGD-20)")]
    figure, axes = figure_axes(1, len(panels), figsize=(9, 3.6))
    table = table.assign(run=[method if method == "baseline" else f"port-{selection}"
                              for method, selection in zip(table["method"], table["selection"])])
    for axis, (metric, ylabel) in zip(axes, panels):
        rows = table[table["metric"] == metric]
        for (norm, eps, run), group in rows.groupby(["norm", "eps", "run"], sort=True):
            group = group.sort_values("n_real")
            line, = axis.plot(group["n_real"], group["mean"], marker="o", label=f"{run} ({norm} {eps:g})")
            axis.fill_between(group["n_real"], group["ci_low"], group["ci_high"], color=line.get_color(), alpha=0.2)
        sizes = sorted(table["n_real"].unique())
        axis.set_xscale("log")
        axis.set_xticks(sizes, [f"{size:,}" for size in sizes])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set(xlabel="real training images (n_real)", ylabel=ylabel)
    axes[0].legend(fontsize=7)
    figure.suptitle("Data scarcity: baseline and PORT at a fixed number of optimizer steps", fontsize=9)
    save_figure(figure, out_plot)
