"""Editing one config value reruns exactly its stage and what depends on it.

Dry runs (`snakemake -n`) against the finished `tiny_run` workdir with an edited copy of the
config; the workdir's outputs and metadata are left as they are."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from conftest import TINY, run_snakemake

# The tiny digits DAG: 3 generators (ddpm: 2 shards, ddpm-4steps: 1, gan: 2), 2 pseudo-label and
# 2 score shards, a discriminator per generator at 2 eps and 2 seeds; runs: linf {baseline, port-adaptive,
# port-random, port-group0, port-group1}, l2 {baseline, port-adaptive, port-random}; smoothing
# {baseline, port-adaptive}; one architecture, one seed.
def merged(*parts: dict) -> dict:
    """Job counts of several downstream sets together (a rule in two sets counts its jobs once per set)."""
    total: dict[str, int] = {}
    for part in parts:
        for rule, count in part.items():
            total[rule] = max(total.get(rule, 0), count) if rule in ("all",) else total.get(rule, 0) + count
    return total


SMOOTH_PORT = {"train_smooth": 1, "certify": 1, "summarize_smooth": 1}
SCORED_RUNS = {"train_robust": 4, "evaluate": 4, "summarize": 2, "plot_training_curves": 2,  # adaptive + groups
               "summarize_score_groups": 1, **SMOOTH_PORT, "all": 1}
PORT_RUNS = merged(SCORED_RUNS, {"train_robust": 2, "evaluate": 2})  # + random, both threats
TRANSFER = {"train_transfer": 3, "evaluate_transfer": 3, "rank_generators": 1}
FROM_FILTER = merged({"filter_synthetic": 3, "select_synthetic": 4, "transfer_set": 3, "plot_synthetic": 1},
                     TRANSFER, PORT_RUNS)
FROM_SCORES = merged({"score_shard": 2, "merge_scores": 1, "select_synthetic": 3}, SCORED_RUNS)
FROM_DISCRIMINATORS = merged({"train_discriminator": 12, "evaluate_discriminator": 12, "arc_curve": 3, "arc": 1,
                              "train_scorer": 2,
                              "rank_generators": 1}, FROM_SCORES)


def from_images(shards: int, generators: int, scored: bool) -> dict:
    """Everything downstream of `generators` generators' sampling (with `shards` sample shards)."""
    chain = {"sample_shard": shards, "merge_shards": generators, "pseudo_label": 2 * generators,
             "merge_labels": generators, "filter_synthetic": generators, "transfer_set": generators,
             "train_transfer": generators, "evaluate_transfer": generators, "distribution_metrics": generators,
             "discrimination_sets": generators, "train_discriminator": 4 * generators,
             "evaluate_discriminator": 4 * generators, "arc_curve": generators, "arc": 1, "rank_generators": 1,
             "audit_synthetic": generators, "all": 1}
    if scored:  # the training generator: scores, selections and every PORT run
        chain = merged(chain, {"scorer_sets": 1, "train_scorer": 2, "score_shard": 2, "merge_scores": 1,
                               "select_synthetic": 4, "plot_synthetic": 1},
                       PORT_RUNS)
    return chain


# (path into datasets.digits, new value, rules the dry run reruns because their params changed,
#  expected jobs per rule). Snakemake names a job's first reason only: a job whose input is rebuilt
# is listed under "input files updated", so the params set holds the stage itself, not what follows.
CASES = {
    "filter threshold": (("filter", "threshold"), 0.8, {"filter_synthetic"}, FROM_FILTER),
    "selection k": (("selection", "k"), 50, {"select_synthetic"},
                    merged({"select_synthetic": 2, "train_robust": 4, "evaluate": 4, "summarize": 2,
                            "plot_training_curves": 2, "all": 1}, SMOOTH_PORT)),
    "audit test threshold": (("audit", "test_threshold"), 0.1, {"audit_synthetic"},
                             merged({"audit_synthetic": 3, "select_synthetic": 4}, PORT_RUNS)),
    # the selections lose their audit input: a changed set of inputs, not changed params
    "audit drop off": (("audit", "drop"), False, set(), merged({"select_synthetic": 4}, PORT_RUNS)),
    "gamma (port runs only)": (("training", "gamma"), 0.5, {"train_robust", "train_smooth"}, PORT_RUNS),
    "PGD steps of linf": (("threats", "linf", "steps"), 5, {"train_robust", "train_transfer"},
                          merged({"train_robust": 5, "evaluate": 5, "summarize": 1, "plot_training_curves": 1,
                                  "summarize_score_groups": 1, "all": 1}, TRANSFER)),
    "evaluation pgd_steps": (("evaluation", "pgd_steps"), 5, {"evaluate", "evaluate_transfer"},
                             {"evaluate": 8, "summarize": 2, "summarize_score_groups": 1, "evaluate_transfer": 3,
                              "rank_generators": 1, "all": 1}),
    "lanet epochs": (("labelers", "lanet", "epochs"), 3, {"train_labeler"},
                     merged({"train_labeler": 1, "pseudo_label": 6, "merge_labels": 3, "distribution_metrics": 3,
                             "audit_synthetic": 3}, FROM_FILTER)),
    "generator steps": (("generators", "ddpm", "steps"), 5, {"sample_shard"}, from_images(2, 1, scored=True)),
    "DDPM training steps": (("diffusion_models", "ddpm", "steps"), 31, {"train_ddpm"},
                            merged({"train_ddpm": 1}, from_images(3, 2, scored=True))),
    "GAN steps": (("gan_models", "gan", "steps"), 41, {"train_gan"},
                  merged({"train_gan": 1}, from_images(2, 1, scored=False))),
    "training epochs (smoothing has its own)": (
        ("training", "epochs"), 3, {"train_robust"},
        {"train_robust": 8, "evaluate": 8, "summarize": 2, "plot_training_curves": 2, "summarize_score_groups": 1,
         "all": 1}),
    "training lr (shared with smoothing and transfer)": (
        ("training", "lr"), 0.02, {"train_robust", "train_smooth", "train_transfer"},
        merged({"train_robust": 8, "evaluate": 8, "summarize": 2, "plot_training_curves": 2,
                "summarize_score_groups": 1, "train_smooth": 2, "certify": 2, "summarize_smooth": 1, "all": 1},
               TRANSFER)),
    "smoothing sigma": (("smoothing", "sigma"), 0.5, {"train_smooth"},
                        {"train_smooth": 2, "certify": 2, "summarize_smooth": 1, "all": 1}),
    "smoothing beta": (("smoothing", "beta"), 3.0, {"train_smooth"},
                       {"train_smooth": 2, "certify": 2, "summarize_smooth": 1, "all": 1}),
    "certify n": (("smoothing", "certify", "n"), 300, {"certify"}, {"certify": 2, "summarize_smooth": 1, "all": 1}),
    "discriminator epochs": (("discrimination", "epochs"), 2, {"train_discriminator", "train_scorer"},
                             FROM_DISCRIMINATORS),
    "score eps": (("scores", "eps"), 0.02, {"score_shard"}, FROM_SCORES),
    "a third discrimination seed (only its discriminators train)": (
        ("discrimination", "seeds"), [0, 1, 2], set(),
        {"train_discriminator": 6, "evaluate_discriminator": 6, "arc_curve": 3, "arc": 1, "rank_generators": 1,
         "all": 1}),
    "transfer set size": (("generator_ranking", "n_train"), 45, {"transfer_set"},
                          merged({"transfer_set": 3, "all": 1}, TRANSFER)),
    "score groups with AutoAttack": (("score_groups", "autoattack"), True, {"evaluate"},
                                     {"evaluate": 2, "summarize_score_groups": 1, "all": 1}),
    "data split": (("source", "test_fraction"), 0.3, {"prepare_data"},
                   merged({"prepare_data": 1, "train_ddpm": 1, "train_gan": 1, "train_labeler": 2,
                           "train_robust": 2, "evaluate": 2, "train_smooth": 1, "certify": 1},  # + the baselines
                          from_images(5, 3, scored=True))),
}


def job_counts(output: str) -> dict[str, int]:
    """The last 'Job stats' table of a dry run as {rule: count}; {} when nothing is to be done."""
    if "Nothing to be done" in output:
        return {}
    tables = re.findall(r"^Job stats:\n\s*job\s+count\s*\n\s*-+\s+-+\s*\n(.*?)^\s*total\s+(\d+)\s*$",
                        output, flags=re.M | re.S)
    assert tables, f"no job-count table in the dry run:\n{output[-3000:]}"
    rows, total = tables[-1]
    counts = {}
    for line in rows.strip().splitlines():
        rule, count = line.split()
        counts[rule] = int(count)
    assert sum(counts.values()) == int(total), rows
    return counts


def params_changed(output: str) -> set[str]:
    """Rules listed under 'params have changed since last execution' in the dry run's Reasons."""
    match = re.search(r"^\s*params have changed since last execution:\n\s+(.+)$", output, flags=re.M)
    return set(match.group(1).replace(",", " ").split()) if match else set()


def dry_run(workdir, config: dict, name: str):
    path = workdir.parent / f"{workdir.name}-{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run_snakemake(workdir, "-n", "--quiet", "rules", "--configfile", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("case", list(CASES))
def test_one_config_edit_reruns_exactly_its_stage_and_downstream(tiny_run, case):
    path, value, changed, expected = CASES[case]
    config = copy.deepcopy(TINY)
    block = config["datasets"]["digits"]
    for key in path[:-1]:
        block = block.setdefault(key, {})
    assert block.get(path[-1]) != value
    block[path[-1]] = value
    output = dry_run(tiny_run, config, re.sub(r"\W+", "_", case))
    assert job_counts(output) == expected
    assert params_changed(output) == changed


@pytest.mark.integration
def test_reordering_keys_and_the_unchanged_config_rerun_nothing(tiny_run):
    config = copy.deepcopy(TINY)
    digits = config["datasets"]["digits"]
    config["datasets"]["digits"] = {k: dict(reversed(list(v.items()))) if isinstance(v, dict) else v
                                    for k, v in reversed(list(digits.items()))}
    assert job_counts(dry_run(tiny_run, config, "reordered")) == {}
    assert job_counts(dry_run(tiny_run, TINY, "same")) == {}
