# The data-scarcity study (`snakemake --cores all results/{dataset}/studies/data_scarcity.csv`; not in the
# default target nor in `studies`): the real training set cut to n_real images, and at each cut the pipeline's
# own stages on the cut alone (the training generator's model, both labelers, the scorers, the selections),
# then the baseline and PORT runs. Files: paths.scarce(pattern), the dataset's layout under the cut's folder.
# n_real `all` trains on the whole set with the dataset's own generator, labelers and selections.


def cut(pattern, **values):
    """Input function: what the job's cut reads for `pattern` (port.settings.scarcity.scarcity_file)."""
    return lambda wc: settings.scarcity.scarcity_file(pattern, **dict(wc.items()), **values)


def cut_selection(wc):
    """PORT trains on the cut's selection of the training generator's images; the baseline on the cut alone."""
    selection = paths.selection_of(wc.method)
    generator = dataset_cfg(wc)["training"]["generator"]
    return [] if selection is None else cut(paths.SELECTED, generator=generator, selection=selection)(wc)


def cut_trained_on(wc):
    """What the training-set evaluation skips: the run's validation split (its val_fraction and seed)."""
    return {"val_fraction": dataset_cfg(wc)["training"]["val_fraction"], "seed": run_seed(wc)}


def scarcity_runs(file_of):
    """Input function: file_of(run wildcards) for every run of the study."""
    return lambda wc: [file_of(run) for run in settings.scarcity.scarcity_runs(config, wc.dataset)]


rule scarcity_cut:
    input:
        train_path=paths.TRAIN,
    output:
        out_path=paths.DATA_SCARCITY_TRAIN,
    wildcard_constraints:
        n_real=r"\d+",
    params:
        n_real=lambda wc: int(wc.n_real),
        seed=derive_seed(config["seed"], "data_scarcity"),
    priority: 10  # the head of each cut's synthetic-data chain, the critical path
    log:
        "logs/scarcity_cut/{dataset}/n{n_real}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/scarcity_cut.py"


use rule train_ddpm as train_scarcity_ddpm with:
    input:
        train_path=paths.DATA_SCARCITY_TRAIN,
    output:
        out_dir=directory(paths.scarce(paths.DIFFUSION_MODEL)),
    log:
        "logs/train_scarcity_ddpm/{dataset}/n{n_real}/{model}.log",
    benchmark:
        "benchmarks/train_scarcity_ddpm/{dataset}/n{n_real}/{model}.tsv"


use rule train_gan as train_scarcity_gan with:
    input:
        train_path=paths.DATA_SCARCITY_TRAIN,
    output:
        out_path=paths.scarce(paths.GAN_MODEL),
    log:
        "logs/train_scarcity_gan/{dataset}/n{n_real}/{model}.log",
    benchmark:
        "benchmarks/train_scarcity_gan/{dataset}/n{n_real}/{model}.tsv"


use rule sample_shard as sample_scarcity_shard with:
    input:
        lambda wc: settings.scarcity.scarcity_generator_model(config, wc.dataset, wc.n_real),
        reference=[],
    output:
        out_path=paths.scarce(paths.SAMPLE_SHARD),
    params:
        source=lambda wc: settings.scarcity.scarcity_generator_model(config, wc.dataset, wc.n_real),
        settings=lambda wc: settings.generation.generator_settings(config, wc.dataset, wc.generator),
        seed=lambda wc: derive_seed(config["seed"], "generator", wc.generator),
    log:
        "logs/sample_scarcity_shard/{dataset}/n{n_real}/{generator}/{shard}.log",
    benchmark:
        "benchmarks/sample_scarcity_shard/{dataset}/n{n_real}/{generator}/{shard}.tsv"


use rule merge_shards as merge_scarcity_shards with:
    input:
        shard_paths=shard_files(paths.scarce(paths.SAMPLE_SHARD), lambda ds, wc: ds["generators"][wc.generator]["n_shards"]),
    output:
        out_path=paths.scarce(paths.IMAGES),
    log:
        "logs/merge_scarcity_shards/{dataset}/n{n_real}/{generator}.log",
    benchmark:
        "benchmarks/merge_scarcity_shards/{dataset}/n{n_real}/{generator}.tsv"


use rule train_labeler as train_scarcity_labeler with:
    input:
        train_path=paths.DATA_SCARCITY_TRAIN,
        test_path=paths.TEST,
    output:
        model_out=paths.scarce(paths.LABELER_MODEL),
        history_out=paths.scarce(paths.LABELER_HISTORY),
        metrics_out=paths.scarce(paths.LABELER_METRICS),
    params:
        settings=lambda wc: settings.scarcity.scarcity_labeler_settings(config, wc.dataset, wc.slot),
        seed=lambda wc: derive_seed(config["seed"], "labeler", wc.slot),
        checkpoint_path=paths.scarce(paths.LABELER_CHECKPOINT),
    log:
        "logs/train_scarcity_labeler/{dataset}/n{n_real}/{slot}.log",
    benchmark:
        "benchmarks/train_scarcity_labeler/{dataset}/n{n_real}/{slot}.tsv"


use rule pseudo_label as scarcity_pseudo_label with:
    input:
        images_path=paths.scarce(paths.IMAGES),
        lanet_path=paths.fill(paths.scarce(paths.LABELER_MODEL), slot="lanet"),
        splitnet_path=paths.fill(paths.scarce(paths.LABELER_MODEL), slot="splitnet"),
    output:
        out_path=paths.scarce(paths.LABEL_SHARD),
    log:
        "logs/scarcity_pseudo_label/{dataset}/n{n_real}/{generator}/{shard}.log",
    benchmark:
        "benchmarks/scarcity_pseudo_label/{dataset}/n{n_real}/{generator}/{shard}.tsv"


use rule merge_labels as merge_scarcity_labels with:
    input:
        images=paths.scarce(paths.IMAGES),
        shard_paths=shard_files(paths.scarce(paths.LABEL_SHARD), lambda ds, wc: ds["pseudo_label"]["n_shards"]),
    output:
        out_path=paths.scarce(paths.LABELS),
    log:
        "logs/merge_scarcity_labels/{dataset}/n{n_real}/{generator}.log",
    benchmark:
        "benchmarks/merge_scarcity_labels/{dataset}/n{n_real}/{generator}.tsv"


use rule filter_synthetic as filter_scarcity_synthetic with:
    input:
        labels_path=paths.scarce(paths.LABELS),
    output:
        out_mask=paths.scarce(paths.FILTER_MASK),
        out_counts=paths.scarce(paths.FILTER_COUNTS),
    log:
        "logs/filter_scarcity_synthetic/{dataset}/n{n_real}/{generator}.log",
    benchmark:
        "benchmarks/filter_scarcity_synthetic/{dataset}/n{n_real}/{generator}.tsv"


use rule discrimination_sets as scarcity_discrimination_sets with:
    input:
        train_path=paths.DATA_SCARCITY_TRAIN,
        test_path=paths.TEST,
        synthetic_path=paths.scarce(paths.IMAGES),
    output:
        out_real=paths.scarce(paths.DISCRIMINATION_REAL),
        out_synthetic=paths.scarce(paths.DISCRIMINATION_SYNTHETIC),
        out_validation=paths.scarce(paths.DISCRIMINATION_VALIDATION),
        out_heldout=paths.scarce(paths.DISCRIMINATION_HELDOUT),
    log:
        "logs/scarcity_discrimination_sets/{dataset}/n{n_real}/{generator}.log",
    benchmark:
        "benchmarks/scarcity_discrimination_sets/{dataset}/n{n_real}/{generator}.tsv"


use rule scorer_sets as scarcity_scorer_sets with:
    input:
        train_path=paths.DATA_SCARCITY_TRAIN,
        synthetic_path=paths.scarce(paths.IMAGES),
    output:
        out_folds=paths.scarce(paths.SCORER_FOLD_ASSIGNMENT),
        out_pools=[paths.fill(paths.scarce(paths.SCORER_POOL), fold=fold) for fold in range(paths.SCORER_FOLDS)],
    log:
        "logs/scarcity_scorer_sets/{dataset}/n{n_real}/{generator}.log",
    benchmark:
        "benchmarks/scarcity_scorer_sets/{dataset}/n{n_real}/{generator}.tsv"


use rule train_scorer as train_scarcity_scorer with:
    input:
        train_path=paths.scarce(paths.DISCRIMINATION_REAL),
        synthetic_path=paths.scarce(paths.SCORER_POOL),
    output:
        model_out=paths.scarce(paths.SCORER_MODEL),
        history_out=paths.scarce(paths.SCORER_HISTORY),
    params:
        settings=lambda wc: settings.scarcity.scarcity_scorer_settings(config, wc.dataset),
        seed=lambda wc: derive_seed(config["seed"], "scorer", wc.generator, int(wc.fold)),
        checkpoint_path=paths.scarce(paths.SCORER_CHECKPOINT),
        settings_key="datasets.{dataset}.discrimination",  # the config block named in its errors
    log:
        "logs/train_scarcity_scorer/{dataset}/n{n_real}/{generator}/fold{fold}.log",
    benchmark:
        "benchmarks/train_scarcity_scorer/{dataset}/n{n_real}/{generator}/fold{fold}.tsv"


use rule score_shard as scarcity_score_shard with:
    input:
        model_paths=[paths.fill(paths.scarce(paths.SCORER_MODEL), fold=fold) for fold in range(paths.SCORER_FOLDS)],
        folds_path=paths.scarce(paths.SCORER_FOLD_ASSIGNMENT),
        images_path=paths.scarce(paths.IMAGES),
    output:
        out_path=paths.scarce(paths.SCORE_SHARD),
    log:
        "logs/scarcity_score_shard/{dataset}/n{n_real}/{generator}/{shard}.log",
    benchmark:
        "benchmarks/scarcity_score_shard/{dataset}/n{n_real}/{generator}/{shard}.tsv"


use rule merge_scores as merge_scarcity_scores with:
    input:
        images=paths.scarce(paths.IMAGES),
        shard_paths=shard_files(paths.scarce(paths.SCORE_SHARD), lambda ds, wc: ds["scores"]["n_shards"]),
    output:
        out_path=paths.scarce(paths.SCORES),
    log:
        "logs/merge_scarcity_scores/{dataset}/n{n_real}/{generator}.log",
    benchmark:
        "benchmarks/merge_scarcity_scores/{dataset}/n{n_real}/{generator}.tsv"


# A cut's images against the real test set and the cut it was trained on (the audit of rules/audit.smk).
use rule audit_synthetic as audit_scarcity_synthetic with:
    input:
        images_path=paths.scarce(paths.IMAGES),
        train_path=paths.DATA_SCARCITY_TRAIN,
        test_path=paths.TEST,
        lanet_path=paths.fill(paths.scarce(paths.LABELER_MODEL), slot="lanet"),
    output:
        out_path=paths.scarce(paths.AUDIT),
        out_csv=paths.scarce(paths.AUDIT_TABLE),
        out_png=paths.scarce(paths.AUDIT_PLOT),
    log:
        "logs/audit_scarcity_synthetic/{dataset}/n{n_real}/{generator}.log",
    benchmark:
        "benchmarks/audit_scarcity_synthetic/{dataset}/n{n_real}/{generator}.tsv"


use rule select_synthetic as select_scarcity_synthetic with:
    input:
        images_path=paths.scarce(paths.IMAGES),
        filter_path=paths.scarce(paths.FILTER_MASK),
        scores_path=lambda wc: paths.scarce(paths.SCORES).format(**dict(wc.items())) if paths.needs_scores(wc.selection) else [],
        labels_path=lambda wc: paths.scarce(paths.LABELS).format(**dict(wc.items())) if wc.selection == "confidence" else [],
        audit_path=lambda wc: paths.scarce(paths.AUDIT).format(**dict(wc.items())) if dataset_cfg(wc)["audit"]["drop"] else [],
    output:
        out_path=paths.scarce(paths.SELECTED),
    log:
        "logs/select_scarcity_synthetic/{dataset}/n{n_real}/{generator}/{selection}.log",
    benchmark:
        "benchmarks/select_scarcity_synthetic/{dataset}/n{n_real}/{generator}/{selection}.tsv"


use rule train_robust as train_scarcity with:
    input:
        train_path=cut(paths.TRAIN),
        synthetic_path=cut_selection,
    output:
        model_out=paths.scarce(paths.RUN_MODEL),
        history_out=paths.scarce(paths.RUN_HISTORY),
    params:
        settings=lambda wc: settings.scarcity.scarcity_training_settings(config, wc.dataset, wc.threat, wc.method, wc.arch),
        seed=run_seed,
        checkpoint_path=paths.scarce(paths.RUN_CHECKPOINT),
        settings_key="datasets.{dataset}.training",  # the config block named in its errors
    log:
        "logs/train_scarcity/{dataset}/n{n_real}/{threat}/{method}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/train_scarcity/{dataset}/n{n_real}/{threat}/{method}/{arch}/seed{seed}.tsv"


use rule evaluate as evaluate_scarcity with:
    input:
        model_path=paths.scarce(paths.RUN_MODEL),
        test_path=paths.TEST,
    output:
        out_csv=paths.scarce(paths.RUN_EVAL),
    params:
        threat=lambda wc: settings.schema.canonical(dataset_cfg(wc)["threats"][wc.threat]),
        settings=lambda wc: settings.evaluation.evaluation_settings(config, wc.dataset, wc.method),
        row=lambda wc: settings.scarcity.scarcity_row(wc.method, wc.arch, int(wc.seed), wc.n_real),
        seed=config["seed"],
    log:
        "logs/evaluate_scarcity/{dataset}/n{n_real}/{threat}/{method}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate_scarcity/{dataset}/n{n_real}/{threat}/{method}/{arch}/seed{seed}.tsv"


# Robust training accuracy: PGD-20 on the images the run trained on (its cut less its validation split).
use rule evaluate as evaluate_scarcity_train with:
    input:
        model_path=paths.scarce(paths.RUN_MODEL),
        test_path=cut(paths.TRAIN),
    output:
        out_csv=paths.DATA_SCARCITY_TRAIN_EVAL,
    params:
        threat=lambda wc: settings.schema.canonical(dataset_cfg(wc)["threats"][wc.threat]),
        settings=lambda wc: settings.schema.canonical({**dataset_cfg(wc)["evaluation"], "autoattack": False,
                                                   "trained_on": cut_trained_on(wc)}),
        row=lambda wc: settings.scarcity.scarcity_row(wc.method, wc.arch, int(wc.seed), wc.n_real),
        seed=config["seed"],
    log:
        "logs/evaluate_scarcity_train/{dataset}/n{n_real}/{threat}/{method}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate_scarcity_train/{dataset}/n{n_real}/{threat}/{method}/{arch}/seed{seed}.tsv"


rule data_scarcity_study:
    input:
        eval_csvs=scarcity_runs(lambda run: paths.scarce(paths.RUN_EVAL).format(**run)),
        train_eval_csvs=scarcity_runs(lambda run: paths.DATA_SCARCITY_TRAIN_EVAL.format(**run)),
        train_sets=scarcity_runs(lambda run: settings.scarcity.scarcity_file(paths.TRAIN, **run)),
        model_paths=scarcity_runs(lambda run: paths.scarce(paths.RUN_MODEL).format(**run)),
    output:
        out_csv=report(
            paths.DATA_SCARCITY_TABLE,
            caption="../report/data_scarcity.rst",
            category="Studies",
            labels={"dataset": "{dataset}", "table": "data scarcity"},
        ),
        out_plot=report(
            paths.DATA_SCARCITY_PLOT,
            caption="../report/data_scarcity.rst",
            category="Studies",
            labels={"dataset": "{dataset}", "figure": "data scarcity"},
        ),
    log:
        "logs/data_scarcity_study/{dataset}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/data_scarcity_study.py"
