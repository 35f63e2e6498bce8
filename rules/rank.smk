# Ranking generators (paper Table 6, in small): ARC against transferred robustness (adversarial
# training on one generator's images alone) and two baselines; and PORT per score group (Figure 5).


rule transfer_set:
    input:
        images_path=paths.IMAGES,
        filter_path=paths.FILTER_MASK,
        real_path=paths.TRAIN,
    output:
        out_path=paths.TRANSFER_SET,
    params:
        k=lambda wc: dataset_cfg(wc)["generator_ranking"]["n_train"],
        seed=lambda wc: derive_seed(config["seed"], "transfer", wc.generator),
    log:
        "logs/transfer_set/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/transfer_set/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/transfer_set.py"


rule train_transfer:
    input:
        train_path=paths.TRANSFER_SET,
        synthetic_path=[],
    output:
        model_out=paths.TRANSFER_MODEL,
        history_out=paths.TRANSFER_HISTORY,
    params:
        settings=lambda wc: settings.discrimination.transfer_settings(config, wc.dataset),
        seed=lambda wc: derive_seed(config["seed"], "transfer", wc.generator),
        checkpoint_path=paths.TRANSFER_CHECKPOINT,
        settings_key="datasets.{dataset}.training",  # the config block named in its errors
    resources:
        gpu=1,
    log:
        "logs/train_transfer/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/train_transfer/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_robust.py"


rule evaluate_transfer:
    input:
        model_path=paths.TRANSFER_MODEL,
        test_path=paths.TEST,
    output:
        out_csv=paths.TRANSFER_EVAL,
    params:
        threat=lambda wc: settings.schema.canonical(dataset_cfg(wc)["threats"][dataset_cfg(wc)["generator_ranking"]["threat"]]),
        settings=lambda wc: settings.schema.canonical({**dataset_cfg(wc)["evaluation"], "autoattack": False}),
        seed=config["seed"],
        row=lambda wc: {"generator": wc.generator},
    resources:
        gpu=1,
    log:
        "logs/evaluate_transfer/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/evaluate_transfer/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/evaluate.py"


rule distribution_metrics:
    input:
        images_path=paths.IMAGES,
        train_path=paths.TRAIN,
        lanet_path=paths.fill(paths.LABELER_MODEL, slot="lanet"),
    output:
        out_csv=paths.DISTRIBUTION_METRICS,
    params:
        n_images=lambda wc: dataset_cfg(wc)["generator_ranking"]["n_metric_images"],
    resources:
        gpu=1,
    log:
        "logs/distribution_metrics/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/distribution_metrics/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/distribution_metrics.py"


rule rank_generators:
    input:
        arc_summary_csv=paths.ARC_SUMMARY,
        distribution_csvs=ranked(paths.DISTRIBUTION_METRICS),
        transfer_csvs=ranked(paths.TRANSFER_EVAL),
    output:
        out_csv=report(
            paths.GENERATOR_RANKING,
            caption="../report/generators.rst",
            category="Generators",
            labels={"dataset": "{dataset}", "table": "generator ranking"},
        ),
    log:
        "logs/rank_generators/{dataset}.log",
    benchmark:
        "benchmarks/rank_generators/{dataset}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/rank_generators.py"


rule summarize_score_groups:
    input:
        eval_csvs=score_group_runs(paths.RUN_EVAL),
        selected_paths=lambda wc: [
            selected_images(wc.dataset, paths.selection_of(m))
            for m in settings.evaluation.score_group_methods(config, wc.dataset)
        ],
    output:
        out_csv=report(
            paths.SCORE_GROUP_TABLE,
            caption="../report/score_groups.rst",
            category="Results",
            labels={"dataset": "{dataset}", "table": "score groups"},
        ),
        out_png=report(
            paths.SCORE_GROUP_PLOT,
            caption="../report/score_groups.rst",
            category="Results",
            labels={"dataset": "{dataset}", "figure": "score groups"},
        ),
    log:
        "logs/summarize_score_groups/{dataset}.log",
    benchmark:
        "benchmarks/summarize_score_groups/{dataset}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/summarize_score_groups.py"
