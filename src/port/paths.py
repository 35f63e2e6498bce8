"""Where every result lives, and the grammar of run names: the one home of both.

Patterns carry Snakemake wildcards (`{dataset}`, `{generator}`, ...); rules use them as they
are and Python code fills them with `str.format`. The module imports nothing heavy, so the
Snakefile parses fast.

Run names: `baseline` trains on real data only; `port-<selection>` is PORT on one selection of
synthetic images, where a selection is `random`, `adaptive`, `confidence` or `group<g>` (the g-th
score group).
"""

from __future__ import annotations

import re

# ---- run names ---------------------------------------------------------------------------
BASELINE = "baseline"
SELECTIONS = ("random", "adaptive", "confidence")
MIXTURE_SELECTIONS = ("random", "adaptive")  # the selections with a k that a mixture splits among its members
SELECTION = r"random|adaptive|confidence|group\d+"
RUN_NAME = rf"{BASELINE}|port-(?:{SELECTION})"
_GROUP = re.compile(r"group(\d+)")
_PORT_RUN = re.compile(rf"port-({SELECTION})")

NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*"
# A mixture of generators (port.mixture) may also use `+` in its name (`ddpm+stylegan`); the other
# generators may not: their files are named by the {generator} wildcard (NAME).
MIXTURE_NAME = r"[A-Za-z0-9][A-Za-z0-9_+-]*"
# The mixture study's training variants: `on-<generator>`, PORT on one generator or mixture alone.
MIXTURE_VARIANT = rf"on-({MIXTURE_NAME})"
_MIXTURE_VARIANT = re.compile(MIXTURE_VARIANT)
# Training variants (the recipe-study rules train both): a recipe_study variant, or `gamma-<value>`, a PORT
# run of the gamma sweep (studies.gamma).
GAMMA_VARIANT = r"gamma-(\d+(?:\.\d+)?)"
_GAMMA_VARIANT = re.compile(GAMMA_VARIANT)
REGIMES = ("natural", "adversarial")  # sample complexity: standard or adversarial training
ALL_IMAGES = "all"  # the sample-complexity point that trains on every available image
WILDCARD_CONSTRAINTS = {"dataset": NAME, "generator": NAME, "model": NAME, "threat": NAME, "arch": NAME,
                        "method": RUN_NAME, "selection": SELECTION, "eps_index": r"\d+", "fold": r"\d+",
                        "slot": "lanet|splitnet", "shard": r"\d+", "seed": r"\d+",
                        "variant": rf"{NAME}|gamma-\d+(?:\.\d+)?|on-{MIXTURE_NAME}", "mixture": MIXTURE_NAME,
                        "regime": "|".join(REGIMES),
                        "size": rf"\d+|{ALL_IMAGES}", "split": "synthetic|real", "threshold": r"\d+(?:\.\d+)?",
                        "n_real": rf"\d+|{ALL_IMAGES}"}


def run_name(selection: str | None) -> str:
    """The run that trains on `selection` (None: the real-data baseline)."""
    return BASELINE if selection is None else f"port-{selection}"


def selection_of(run: str) -> str | None:
    """The selection a run trains on (None for the baseline); ValueError for a name outside the grammar."""
    if run == BASELINE:
        return None
    match = _PORT_RUN.fullmatch(run)
    if match is None:
        raise ValueError(f"run name '{run}' is neither '{BASELINE}' nor 'port-<{SELECTION}>'")
    return match.group(1)


def gamma_variant(gamma: float) -> str:
    """The training variant of the gamma sweep at `gamma` (`gamma-0.5`)."""
    return f"gamma-{float(gamma):g}"


def gamma_of(variant: str) -> float | None:
    """The gamma of a `gamma-<value>` variant, None for any other name."""
    match = _GAMMA_VARIANT.fullmatch(variant)
    return float(match.group(1)) if match else None


def mixture_variant(generator: str) -> str:
    """The mixture study's training variant that trains on `generator` (a generator or a mixture)."""
    return f"on-{generator}"


def generator_of_variant(variant: str) -> str | None:
    """The generator of an `on-<generator>` variant, None for any other name."""
    match = _MIXTURE_VARIANT.fullmatch(variant)
    return match.group(1) if match else None


def group_selection(group: int) -> str:
    return f"group{group}"


def group_of(selection: str | None) -> int | None:
    """The score-group index of a `group<g>` selection, None for any other."""
    match = _GROUP.fullmatch(selection or "")
    return int(match.group(1)) if match else None


def needs_scores(selection: str) -> bool:
    """Adaptive and score-group selections rank images by their synthetic score."""
    return selection == "adaptive" or group_of(selection) is not None


# ---- path patterns -----------------------------------------------------------------------
def fill(pattern: str, **values) -> str:
    """`pattern` with some wildcards filled in and the others left for Snakemake."""
    for name, value in values.items():
        pattern = pattern.replace("{" + name + "}", str(value))
    return pattern


RESULTS = "results/{dataset}"
TRAIN = RESULTS + "/data/train.h5"
TEST = RESULTS + "/data/test.h5"
DIFFUSION_MODEL = RESULTS + "/diffusion/{model}"  # a save_pretrained directory
GAN_MODEL = RESULTS + "/gan/{model}.pt"

LABELER = RESULTS + "/labelers/{slot}"
LABELER_MODEL = LABELER + "/model.pt"
LABELER_HISTORY = LABELER + "/history.csv"
LABELER_METRICS = LABELER + "/metrics.csv"

FETCHED_MODEL = RESULTS + "/fetched/{generator}"  # a hub snapshot or URL file, fetched on the submitting host
# a `download: true` source's archive, extracted (the root torchvision reads); no generator name
# (NAME) starts with `_`, so no FETCHED_MODEL is this folder
FETCHED_SOURCE = RESULTS + "/fetched/_source"
SYNTHETIC = RESULTS + "/synthetic/{generator}"
SAMPLE_SHARD = SYNTHETIC + "/shard_{shard}.h5"
IMAGES = SYNTHETIC + "/images.h5"
LABEL_SHARD = SYNTHETIC + "/labels/shard_{shard}.h5"
LABELS = SYNTHETIC + "/labels.h5"
FILTER_MASK = SYNTHETIC + "/filter.h5"
FILTER_COUNTS = SYNTHETIC + "/filter_counts.csv"
# nearest real test and training image of every synthetic image (port.audit), its summary and figure
AUDIT = SYNTHETIC + "/audit.h5"
AUDIT_TABLE = SYNTHETIC + "/audit.csv"
AUDIT_PLOT = SYNTHETIC + "/audit.png"
SCORE_SHARD = SYNTHETIC + "/scores/shard_{shard}.h5"
SCORES = SYNTHETIC + "/scores.h5"
SELECTED = SYNTHETIC + "/selected/{selection}.h5"
TRANSFER_SET = SYNTHETIC + "/transfer.h5"
DISTRIBUTION_METRICS = SYNTHETIC + "/distribution_metrics.csv"
SAMPLES_PER_CLASS = SYNTHETIC + "/samples_per_class.png"
DISCARDED = SYNTHETIC + "/discarded.png"

# A mixture has no images of its own: its selections copy its members' chosen images into one set.
MIXTURE = RESULTS + "/mixtures/{mixture}"
MIXTURE_SELECTED = MIXTURE + "/selected/{selection}.h5"
MIXTURE_SELECTION_SUMMARY = MIXTURE + "/selected/{selection}.csv"  # one row per member

DISCRIMINATION = RESULTS + "/discriminators/{generator}"
DISCRIMINATION_REAL = DISCRIMINATION + "/data/real.h5"
DISCRIMINATION_SYNTHETIC = DISCRIMINATION + "/data/synthetic.h5"
DISCRIMINATION_VALIDATION = DISCRIMINATION + "/data/validation.h5"  # synthetic half of the validation set
DISCRIMINATION_HELDOUT = DISCRIMINATION + "/data/heldout.h5"
DISCRIMINATOR = DISCRIMINATION + "/eps{eps_index}/seed{seed}"  # one per eps and discrimination seed
DISCRIMINATOR_MODEL = DISCRIMINATOR + "/model.pt"
DISCRIMINATOR_HISTORY = DISCRIMINATOR + "/history.csv"
DISCRIMINATOR_METRICS = DISCRIMINATOR + "/metrics.csv"
# Cross-fitted scorers (paper Section 3.2 scores with one discriminator; two on disjoint folds keep
# every image's score from a model that never trained on it): scorer f trains on fold f, scores the other.
SCORER_FOLDS = 2
SCORERS = DISCRIMINATION + "/scorers"
SCORER_FOLD_ASSIGNMENT = SCORERS + "/folds.h5"
SCORER_POOL = SCORERS + "/pool{fold}.h5"
SCORER = SCORERS + "/fold{fold}"
SCORER_MODEL = SCORER + "/model.pt"
SCORER_HISTORY = SCORER + "/history.csv"
ARC_CURVE = RESULTS + "/arc/{generator}.csv"  # every discrimination seed's curve
ARC_TABLE = RESULTS + "/arc.csv"  # one row per generator and discrimination seed
ARC_SUMMARY = RESULTS + "/arc_summary.csv"  # mean and interval over seeds; ranks the generators
ARC_PLOT = RESULTS + "/arc.png"

TRANSFER_RUN = RESULTS + "/transfer/{generator}"
TRANSFER_MODEL = TRANSFER_RUN + "/model.pt"
TRANSFER_HISTORY = TRANSFER_RUN + "/history.csv"
TRANSFER_EVAL = TRANSFER_RUN + "/eval.csv"
GENERATOR_RANKING = RESULTS + "/generators.csv"

RUN = RESULTS + "/runs/{threat}/{method}/{arch}/seed{seed}"
RUN_MODEL = RUN + "/model.pt"
RUN_HISTORY = RUN + "/history.csv"
RUN_EVAL = RUN + "/eval.csv"
PORT_TABLE = RESULTS + "/port_{threat}.csv"
SEED_SUMMARY = RESULTS + "/summary_{threat}.csv"  # per run: mean and interval over seeds, PORT - baseline
TRAINING_CURVES = RESULTS + "/training_curves_{threat}.png"
SCORE_GROUP_TABLE = RESULTS + "/score_groups.csv"
SCORE_GROUP_PLOT = RESULTS + "/score_groups.png"

SMOOTH_RUN = RESULTS + "/smooth/{method}/{arch}/seed{seed}"
SMOOTH_MODEL = SMOOTH_RUN + "/model.pt"
SMOOTH_HISTORY = SMOOTH_RUN + "/history.csv"
CERTIFICATE = RESULTS + "/certify/{method}_{arch}_seed{seed}.csv"
CERTIFIED_TABLE = RESULTS + "/certified.csv"  # not port_<threat>.csv: no name clash with a threat
CERTIFIED_SUMMARY = RESULTS + "/certified_summary.csv"
CERTIFIED_PLOT = RESULTS + "/certified.png"
PLAN = RESULTS + "/plan.csv"  # jobs, work, GPU-hours and disk per rule, before the run (port.plan)
BENCH_RESULTS = "bench/results"  # one folder of benchmark JSON files per device and date
SEED_STUDY = RESULTS + "/seeds.csv"  # the baseline and PORT runs of every threat over seed_study.seeds

RECIPE_RUN = RESULTS + "/recipe/{variant}/{arch}/seed{seed}"  # the training-recipe study
RECIPE_MODEL = RECIPE_RUN + "/model.pt"
RECIPE_HISTORY = RECIPE_RUN + "/history.csv"
RECIPE_EVAL = RECIPE_RUN + "/eval.csv"
RECIPE_RUNS_TABLE = RESULTS + "/recipe.csv"
RECIPE_SUMMARY = RESULTS + "/recipe_summary.csv"
ROBUSTBENCH = RESULTS + "/robustbench/{threat}/{method}/{arch}/seed{seed}"  # + .json / .pt
ROBUSTBENCH_INFO = ROBUSTBENCH + ".json"
ROBUSTBENCH_WEIGHTS = ROBUSTBENCH + ".pt"

# The paper's studies (rules/studies.smk; `snakemake studies`, not in the default target). The gamma
# sweep's runs are training variants (RECIPE_RUN with variant gamma-<value>).
STUDIES = RESULTS + "/studies"
GAMMA_STUDY_TABLE = STUDIES + "/gamma.csv"
GAMMA_STUDY_PLOT = STUDIES + "/gamma.png"
SAMPLE_COMPLEXITY = STUDIES + "/sample_complexity"
SAMPLE_COMPLEXITY_SET = SAMPLE_COMPLEXITY + "/data/train_n{size}.h5"
SAMPLE_COMPLEXITY_HELDOUT = SAMPLE_COMPLEXITY + "/data/heldout.h5"  # held-out synthetic images
SAMPLE_COMPLEXITY_TEST = SAMPLE_COMPLEXITY + "/data/test.h5"  # the real test set (of the class subset)
SAMPLE_COMPLEXITY_RUN = SAMPLE_COMPLEXITY + "/{regime}/n{size}/seed{seed}"
SAMPLE_COMPLEXITY_MODEL = SAMPLE_COMPLEXITY_RUN + "/model.pt"
SAMPLE_COMPLEXITY_HISTORY = SAMPLE_COMPLEXITY_RUN + "/history.csv"
SAMPLE_COMPLEXITY_EVAL = SAMPLE_COMPLEXITY_RUN + "/eval_{split}.csv"  # split: synthetic (held out) or real
SAMPLE_COMPLEXITY_TABLE = STUDIES + "/sample_complexity.csv"
SAMPLE_COMPLEXITY_PLOT = STUDIES + "/sample_complexity.png"
FILTER_STUDY = STUDIES + "/filter/t{threshold}"  # threshold 0: no filter
FILTER_STUDY_MASK = FILTER_STUDY + "/filter.h5"
FILTER_STUDY_COUNTS = FILTER_STUDY + "/filter_counts.csv"
FILTER_STUDY_SET = FILTER_STUDY + "/transfer.h5"
FILTER_STUDY_RUN = FILTER_STUDY + "/seed{seed}"
FILTER_STUDY_MODEL = FILTER_STUDY_RUN + "/model.pt"
FILTER_STUDY_HISTORY = FILTER_STUDY_RUN + "/history.csv"
FILTER_STUDY_EVAL = FILTER_STUDY_RUN + "/eval.csv"
FILTER_STUDY_TABLE = STUDIES + "/filter.csv"
NONROBUST_DISCRIMINATOR = DISCRIMINATION + "/nonrobust/{arch}"  # naturally trained (eps 0)
NONROBUST_DISCRIMINATOR_MODEL = NONROBUST_DISCRIMINATOR + "/model.pt"
NONROBUST_DISCRIMINATOR_HISTORY = NONROBUST_DISCRIMINATOR + "/history.csv"
NONROBUST_DISCRIMINATOR_METRICS = NONROBUST_DISCRIMINATOR + "/metrics.csv"
NONROBUST_DISCRIMINATOR_TABLE = STUDIES + "/nonrobust_discriminators.csv"
MIXTURE_STUDY_TABLE = STUDIES + "/mixture.csv"
THEOREM1_TABLE = STUDIES + "/theorem1.csv"
THEOREM1_PLOT = STUDIES + "/theorem1.png"

# The data-scarcity study (rules/scarcity.smk): the real training set cut to n_real images, and under
# n{n_real}/ the dataset's own layout (synthetic/, labelers/, discriminators/, runs/, ...) for that cut.
DATA_SCARCITY = STUDIES + "/data_scarcity/n{n_real}"
DATA_SCARCITY_TABLE = STUDIES + "/data_scarcity.csv"
DATA_SCARCITY_PLOT = STUDIES + "/data_scarcity.png"

# Resumable state of long jobs, deleted when the job finishes.
CHECKPOINTS = RESULTS + "/checkpoints"
LABELER_CHECKPOINT = CHECKPOINTS + "/labelers/{slot}.pt"
DISCRIMINATOR_CHECKPOINT = CHECKPOINTS + "/discriminators/{generator}/eps{eps_index}/seed{seed}.pt"
SCORER_CHECKPOINT = CHECKPOINTS + "/discriminators/{generator}/scorer{fold}.pt"
TRANSFER_CHECKPOINT = CHECKPOINTS + "/transfer/{generator}.pt"
RUN_CHECKPOINT = CHECKPOINTS + "/runs/{threat}/{method}/{arch}/seed{seed}.pt"
SMOOTH_CHECKPOINT = CHECKPOINTS + "/smooth/{method}/{arch}/seed{seed}.pt"
CERTIFY_CHECKPOINT = CHECKPOINTS + "/certify/{method}_{arch}_seed{seed}.pt"
RECIPE_CHECKPOINT = CHECKPOINTS + "/recipe/{variant}/{arch}/seed{seed}.pt"
SAMPLE_COMPLEXITY_CHECKPOINT = CHECKPOINTS + "/studies/sample_complexity/{regime}/n{size}/seed{seed}.pt"
FILTER_STUDY_CHECKPOINT = CHECKPOINTS + "/studies/filter/t{threshold}/seed{seed}.pt"
NONROBUST_DISCRIMINATOR_CHECKPOINT = CHECKPOINTS + "/discriminators/{generator}/nonrobust/{arch}.pt"
DATA_SCARCITY_CHECKPOINTS = CHECKPOINTS + "/studies/data_scarcity/n{n_real}"


def scarce(pattern: str) -> str:
    """`pattern` (a path of the dataset's layout) for the data-scarcity cut `n{n_real}`: the same
    file under results/{dataset}/studies/data_scarcity/n{n_real}/ (checkpoints under checkpoints/)."""
    for root, cut_root in ((CHECKPOINTS, DATA_SCARCITY_CHECKPOINTS), (RESULTS, DATA_SCARCITY)):
        if pattern.startswith(root + "/"):
            return cut_root + pattern[len(root):]
    raise ValueError(f"{pattern}: not a path under {RESULTS}")


DATA_SCARCITY_TRAIN = scarce(TRAIN)  # the cut itself
DATA_SCARCITY_TRAIN_EVAL = scarce(RUN) + "/eval_train.csv"  # robust accuracy on the run's own training images
