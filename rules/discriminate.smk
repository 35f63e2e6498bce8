# Robust discrimination: real-vs-synthetic discriminators per generator and eps, ARC, and the
# per-image synthetic scores that adaptive selection ranks by (paper Sections 2.2 and 3.2).


rule discrimination_sets:
    input:
        train_path=paths.TRAIN,
        test_path=paths.TEST,
        synthetic_path=paths.IMAGES,
    output:
        out_real=paths.DISCRIMINATION_REAL,
        out_synthetic=paths.DISCRIMINATION_SYNTHETIC,
        out_validation=paths.DISCRIMINATION_VALIDATION,
        out_heldout=paths.DISCRIMINATION_HELDOUT,
    params:
        settings=lambda wc: settings.discrimination.discrimination_data_settings(config, wc.dataset),
        seed=lambda wc: derive_seed(config["seed"], "discriminator", wc.generator),
    log:
        "logs/discrimination_sets/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/discrimination_sets/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/discrimination_sets.py"


rule train_discriminator:
    input:
        train_path=paths.DISCRIMINATION_REAL,
        synthetic_path=paths.DISCRIMINATION_SYNTHETIC,
        val_synthetic_path=paths.DISCRIMINATION_VALIDATION,
        init_model=discriminator_curriculum_parent,
    output:
        model_out=paths.DISCRIMINATOR_MODEL,
        history_out=paths.DISCRIMINATOR_HISTORY,
    params:
        settings=lambda wc: settings.discrimination.grid_discriminator_settings(config, wc.dataset, grid_index(wc)),
        seed=lambda wc: derive_seed(config["seed"], "discriminator", wc.generator, int(wc.eps_index), int(wc.seed)),
        checkpoint_path=paths.DISCRIMINATOR_CHECKPOINT,
        settings_key="datasets.{dataset}.discrimination",  # the config block named in its errors
    resources:
        gpu=1,
    log:
        "logs/train_discriminator/{dataset}/{generator}/eps{eps_index}/seed{seed}.log",
    benchmark:
        "benchmarks/train_discriminator/{dataset}/{generator}/eps{eps_index}/seed{seed}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_robust.py"


rule evaluate_discriminator:
    input:
        model_path=paths.DISCRIMINATOR_MODEL,
        heldout_path=paths.DISCRIMINATION_HELDOUT,
    output:
        out_csv=paths.DISCRIMINATOR_METRICS,
    params:
        eps=discriminator_eps,
        settings=lambda wc: settings.discrimination.discriminator_eval_settings(config, wc.dataset),
        seed=config["seed"],
        row=lambda wc: {"generator": wc.generator, "seed": int(wc.seed)},
    resources:
        gpu=1,
    log:
        "logs/evaluate_discriminator/{dataset}/{generator}/eps{eps_index}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate_discriminator/{dataset}/{generator}/eps{eps_index}/seed{seed}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/evaluate_discriminator.py"


rule arc_curve:
    input:
        metric_csvs=lambda wc: settings.discrimination.arc_curve_inputs(config, wc.dataset, wc.generator),
    output:
        out_csv=paths.ARC_CURVE,
    log:
        "logs/arc_curve/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/arc_curve/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/arc_curve.py"


rule arc:
    input:
        curve_csvs=ranked(paths.ARC_CURVE),
    output:
        out_table=report(
            paths.ARC_TABLE,
            caption="../report/arc.rst",
            category="Generators",
            labels={"dataset": "{dataset}", "table": "ARC"},
        ),
        out_summary=report(
            paths.ARC_SUMMARY,
            caption="../report/arc_summary.rst",
            category="Generators",
            labels={"dataset": "{dataset}", "table": "ARC over seeds"},
        ),
        out_plot=report(
            paths.ARC_PLOT,
            caption="../report/arc_plot.rst",
            category="Generators",
            labels={"dataset": "{dataset}", "figure": "robust discrimination"},
        ),
    log:
        "logs/arc/{dataset}.log",
    benchmark:
        "benchmarks/arc/{dataset}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/arc.py"


rule scorer_sets:
    input:
        train_path=paths.TRAIN,
        synthetic_path=paths.IMAGES,
    output:
        out_folds=paths.SCORER_FOLD_ASSIGNMENT,
        out_pools=[paths.fill(paths.SCORER_POOL, fold=fold) for fold in range(paths.SCORER_FOLDS)],
    params:
        n_train=lambda wc: dataset_cfg(wc)["discrimination"]["n_train_synthetic"],
        seed=lambda wc: derive_seed(config["seed"], "scorer", wc.generator),
    log:
        "logs/scorer_sets/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/scorer_sets/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/scorer_sets.py"


rule train_scorer:
    input:
        train_path=paths.DISCRIMINATION_REAL,
        synthetic_path=paths.SCORER_POOL,
    output:
        model_out=paths.SCORER_MODEL,
        history_out=paths.SCORER_HISTORY,
    params:
        settings=lambda wc: settings.discrimination.scorer_settings(config, wc.dataset),
        seed=lambda wc: derive_seed(config["seed"], "scorer", wc.generator, int(wc.fold)),
        checkpoint_path=paths.SCORER_CHECKPOINT,
        settings_key="datasets.{dataset}.discrimination",  # the config block named in its errors
    resources:
        gpu=1,
    log:
        "logs/train_scorer/{dataset}/{generator}/fold{fold}.log",
    benchmark:
        "benchmarks/train_scorer/{dataset}/{generator}/fold{fold}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_robust.py"


rule score_shard:
    input:
        model_paths=[paths.fill(paths.SCORER_MODEL, fold=fold) for fold in range(paths.SCORER_FOLDS)],
        folds_path=paths.SCORER_FOLD_ASSIGNMENT,
        images_path=paths.IMAGES,
    output:
        out_path=paths.SCORE_SHARD,
    params:
        settings=lambda wc: settings.discrimination.score_settings(config, wc.dataset),
        n_shards=lambda wc: dataset_cfg(wc)["scores"]["n_shards"],
    resources:
        gpu=1,
    priority: 10
    log:
        "logs/score_shard/{dataset}/{generator}/{shard}.log",
    benchmark:
        "benchmarks/score_shard/{dataset}/{generator}/{shard}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/score_shard.py"


rule merge_scores:
    input:
        images=paths.IMAGES,
        shard_paths=shard_files(paths.SCORE_SHARD, lambda ds, wc: ds["scores"]["n_shards"]),
    output:
        out_path=paths.SCORES,
    priority: 10
    log:
        "logs/merge_scores/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/merge_scores/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/merge_arrays.py"
