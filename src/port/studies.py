"""The paper's studies as tables and plots (Sehwag et al. 2022): the gamma sweep (Figure 7 /
Table 12), sample complexity on synthetic images alone (Appendix D.1), the filter-threshold
ablation (Appendix D.2), non-robust discriminators next to ARC (Appendix C.1, Table 9), and
(beyond the paper) PORT on a mixture of generators against each of its members.
Theorem 1's check on Gaussians lives in port.theory.

The runs themselves are the pipeline's own stages (trainer, evaluation, filter, discriminators)
with the study's settings; this module builds the study-specific data sets and the summaries.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .artifacts import (ImageWriter, copy_image_subset, dataset_of, image_set_length, iter_image_blocks, provenance,
                        read_arrays, read_attrs, read_csv, read_image_set, write_csv, write_images)
from .errors import ArtifactError, SettingsError
from .paths import ALL_IMAGES
from .seeds import rng
from .statistics import paired_differences, seed_summary, with_differences

log = logging.getLogger(__name__)
ACCURACY_METRICS = ["clean_acc", "pgd_acc"]


# ---- gamma sweep ------------------------------------------------------------------------------
def gamma_study(*, eval_csvs, out_csv, out_plot) -> pd.DataFrame:
    """Per gamma (and architecture) the mean, sd and 95% t-interval over seeds of clean and PGD
    accuracy on the real test set, and their curves against gamma."""
    runs = pd.concat([read_csv(path) for path in eval_csvs], ignore_index=True)
    summary = seed_summary(runs, ACCURACY_METRICS, ["architecture", "gamma"])
    write_csv(summary, out_csv)
    _interval_plot(summary, "gamma", out_plot, xlabel="gamma (weight of the real half of the loss)",
                   title="PORT against gamma", series=["architecture"])
    return summary


def _interval_plot(summary: pd.DataFrame, x: str, out_plot, xlabel: str, title: str, series: list[str],
                   logx: bool = False) -> None:
    """Mean with its 95% interval (a band; single seeds show the mean alone), one line per series and metric."""
    from .reporting import figure_axes, save_figure

    figure, axis = figure_axes(figsize=(5.5, 3.8))
    for keys, group in summary.groupby(series + ["metric"], sort=True):
        group = group.sort_values(x)
        label = " ".join(map(str, keys if isinstance(keys, tuple) else (keys,)))
        line, = axis.plot(group[x], group["mean"], marker="o", label=label)
        if group["ci_low"].notna().any():
            axis.fill_between(group[x], group["ci_low"], group["ci_high"], color=line.get_color(), alpha=0.2)
    if logx:  # tick the grid's own sizes, without the log axis's overlapping minor labels
        from matplotlib.ticker import NullFormatter

        sizes = sorted(summary[x].unique())
        axis.set_xscale("log")
        axis.set_xticks(sizes, [f"{size:,}" for size in sizes])
        axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set(xlabel=xlabel, ylabel="accuracy", title=title)
    axis.legend(fontsize=7)
    save_figure(figure, out_plot)


# ---- sample complexity ------------------------------------------------------------------------
def class_subset(labels: np.ndarray, classes: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the images in `classes`, their labels renumbered 0..len(classes)-1 in the given
    order); every image with its own labels when classes is None."""
    labels = np.asarray(labels)
    if classes is None:
        return np.ones(len(labels), bool), labels.astype(np.int64)
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise SettingsError(f"studies.sample_complexity.classes: two or more distinct classes, got {classes}")
    lookup = np.full(max(int(labels.max(initial=0)), max(classes)) + 1, -1, np.int64)
    lookup[list(classes)] = np.arange(len(classes))
    mask = np.isin(labels, classes)
    return mask, np.where(mask, lookup[labels], -1)


def _subset_attrs(real_path, stage: str, settings: dict, seed: int | None, num_classes: int) -> dict:
    real = read_attrs(real_path)
    return provenance(stage, settings, seed, dataset=dataset_of(real_path), num_classes=num_classes,
                      channel_mean=real["channel_mean"], channel_std=real["channel_std"])


def synthetic_pool(keep: np.ndarray, labels: np.ndarray, classes, n_heldout: int, seed: int):
    """(training order, held-out indices, renumbered labels): the filtered images of `classes`, in a
    seeded order whose first `n_heldout` are held out; training sets are prefixes of the rest, so a
    smaller set is a subset of every larger one."""
    in_classes, renumbered = class_subset(labels, classes)
    candidates = np.flatnonzero(keep & in_classes)
    if n_heldout >= len(candidates):
        raise SettingsError(f"studies.sample_complexity.n_heldout={n_heldout}: only {len(candidates)} filtered images "
                            f"of the chosen classes, none left to train on")
    order = rng(seed, "sample-complexity").permutation(candidates)
    return order[n_heldout:], np.sort(order[:n_heldout]), renumbered


def sample_complexity_set(*, images_path, filter_path, real_path, out_path, size: str, n_heldout: int,
                          classes: list[int] | None, seed: int) -> int:
    """One set of the study: `size` images (a number, or `all`) of the training pool, or the
    held-out synthetic images (size `heldout`), with labels renumbered to the class subset and the
    real training set's channel statistics (the classifier normalises with them)."""
    arrays = read_arrays(filter_path, "keep", "labels")
    if len(arrays["keep"]) != image_set_length(images_path):
        raise ArtifactError(f"{filter_path}: covers {len(arrays['keep'])} images, {images_path} holds "
                            f"{image_set_length(images_path)}")
    train_order, heldout, labels = synthetic_pool(arrays["keep"], arrays["labels"], classes, n_heldout, seed)
    if size == "heldout":
        chosen = heldout
    elif size == ALL_IMAGES:
        chosen = train_order
    else:
        if int(size) > len(train_order):
            raise ArtifactError(f"{filter_path}: a training set of {size} images, but only {len(train_order)} filtered "
                                f"images remain (lower studies.sample_complexity.smallest or factor)")
        chosen = train_order[:int(size)]
    mask = np.zeros(len(labels), bool)
    mask[chosen] = True
    settings = {"size": size, "n_heldout": n_heldout, "classes": classes}
    num_classes = len(classes) if classes else int(read_attrs(real_path)["num_classes"])
    shape = next(iter_image_blocks(images_path, 1))[1].shape[1:]
    with ImageWriter(out_path, shape, _subset_attrs(real_path, "sample_complexity_set", settings, seed,
                                                    num_classes)) as writer:
        written = copy_image_subset(images_path, writer, mask, labels=labels)
    log.info("sample complexity set %s: %d images", size, written)
    return written


def real_class_subset(*, real_path, out_path, classes: list[int] | None) -> int:
    """The real test set restricted to `classes`, labels renumbered as in the synthetic sets."""
    num_classes = int(read_attrs(real_path)["num_classes"])
    images, labels = read_image_set(real_path, num_classes)
    mask, renumbered = class_subset(labels, classes)
    write_images(out_path, images[mask], _subset_attrs(real_path, "real_class_subset", {"classes": classes}, None,
                                                       len(classes) if classes else num_classes),
                 labels=renumbered[mask])
    return int(mask.sum())


def sample_complexity_study(*, eval_csvs, train_sets, out_csv, out_plot) -> pd.DataFrame:
    """Per training regime, size and evaluation set (held-out synthetic, real test): mean, sd and
    interval over seeds of clean and PGD accuracy; the curves against the training-set size
    (`n_train`: the images of each run's training set, `train_sets` in the order of `eval_csvs`)."""
    if len(train_sets) != len(eval_csvs):
        raise ArtifactError(f"{len(eval_csvs)} evaluations but {len(train_sets)} training sets")
    runs = pd.concat([read_csv(path).assign(n_train=image_set_length(train_set))
                      for path, train_set in zip(eval_csvs, train_sets)], ignore_index=True)
    summary = seed_summary(runs, ACCURACY_METRICS, ["regime", "evaluated_on", "n_train"])
    write_csv(summary, out_csv)
    _interval_plot(summary, "n_train", out_plot, xlabel="synthetic training images", logx=True,
                   title="Sample complexity (synthetic images only)", series=["regime", "evaluated_on"])
    return summary


# ---- filter threshold ablation ----------------------------------------------------------------
def filter_study(*, counts_csvs, eval_csvs, thresholds, out_csv) -> pd.DataFrame:
    """Per filter threshold (0: no filter), the share of synthetic images kept and the transferred
    robustness (a classifier adversarially trained on the same number of kept images alone, on
    the real test set): mean, sd and interval over seeds."""
    if len(counts_csvs) != len(thresholds):
        raise ArtifactError(f"{len(counts_csvs)} filter count tables for {len(thresholds)} thresholds")
    keep = []
    for threshold, path in zip(thresholds, counts_csvs):
        counts = read_csv(path)
        keep.append({"threshold": threshold, "filter": "none" if threshold == 0 else f"{threshold:g}",
                     "n_total": int(counts["n_total"].sum()), "n_kept": int(counts["n_kept"].sum())})
    keep = pd.DataFrame(keep)
    keep["keep_rate"] = keep["n_kept"] / keep["n_total"]
    runs = pd.concat([read_csv(path) for path in eval_csvs], ignore_index=True)
    summary = seed_summary(runs, ACCURACY_METRICS, ["threshold"]).merge(keep, on="threshold")
    write_csv(summary, out_csv)
    return summary


# ---- non-robust discriminators ----------------------------------------------------------------
def nonrobust_discriminator_study(*, metric_csvs, arc_summary, out_csv) -> pd.DataFrame:
    """Per generator, the held-out real-vs-synthetic accuracy of each naturally trained
    discriminator architecture, next to the generator's ARC, its mean over discrimination seeds
    (arc_summary.csv; paper Table 9)."""
    runs = pd.concat([read_csv(path) for path in metric_csvs], ignore_index=True)
    wide = runs.pivot_table(index="generator", columns="arch", values="clean_acc").add_prefix("accuracy_")
    arc = read_csv(arc_summary).pivot(index="generator", columns="metric", values="mean")[["arc", "arc_unclipped"]]
    table = wide.join(arc, how="left").reset_index()
    table["n_eval"] = runs.groupby("generator")["n_eval"].first().reindex(table["generator"]).to_numpy()
    table = table.sort_values("arc", kind="stable")
    write_csv(table, out_csv)
    return table


# ---- a mixture of generators against its members ------------------------------------------------
def mixture_study(*, eval_csvs, mixture: str, out_csv) -> pd.DataFrame:
    """Per generator (each member alone, then the mixture) and architecture: mean, sd and 95%
    t-interval over seeds of clean and PGD accuracy; the mixture's rows carry its paired
    difference (same architecture and seed) from each member in turn (`compared_to`) and the
    members' image counts (`generator_shares`). An interval covering zero is no difference."""
    runs = pd.concat([read_csv(path) for path in eval_csvs], ignore_index=True)
    order = list(dict.fromkeys(runs["generator"]))
    if mixture not in order:
        raise ArtifactError(f"no run of mixture '{mixture}' among {order}")
    summary = seed_summary(runs, ACCURACY_METRICS, ["architecture", "generator"])
    members = [name for name in order if name != mixture]
    differences = pd.concat([paired_differences(runs[runs["generator"].isin([member, mixture])], ACCURACY_METRICS,
                                                method="generator", baseline=member) for member in members],
                            ignore_index=True)
    table = with_differences(summary, differences, ["architecture", "generator", "metric"])
    if "generator_shares" in runs.columns:
        shares = runs.dropna(subset=["generator_shares"]).groupby("generator")["generator_shares"].first()
        table["generator_shares"] = table["generator"].map(shares)
    position = {name: i for i, name in enumerate(order)}
    table = table.sort_values(["architecture", "generator", "metric"], kind="stable",
                              key=lambda c: c.map(position) if c.name == "generator" else c)
    write_csv(table, out_csv)
    return table
