# The paper's studies (`snakemake --cores all studies`, or one results/{dataset}/studies/ file; not in the
# default target). Runs reuse the pipeline's scripts: the trainer, evaluation, the filter, the transfer set
# and the discriminator evaluation; the gamma sweep's runs are training variants of rules/recipe.smk.


def study_cfg(wc, name):
    return settings.studies.study(config, wc.dataset, name)


def study_generator_path(pattern, name):
    """Input function: `pattern` (a paths.SYNTHETIC file) of the study's generator."""
    return lambda wc: pattern.format(dataset=wc.dataset, generator=settings.studies.study_generator(config, wc.dataset, name))


rule gamma_study:
    input:
        eval_csvs=lambda wc: settings.studies.gamma_runs(config, wc.dataset, paths.RECIPE_EVAL),
    output:
        out_csv=paths.GAMMA_STUDY_TABLE,
        out_plot=paths.GAMMA_STUDY_PLOT,
    log:
        "logs/gamma_study/{dataset}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/gamma_study.py"


rule sample_complexity_set:
    input:
        images_path=study_generator_path(paths.IMAGES, "sample_complexity"),
        filter_path=study_generator_path(paths.FILTER_MASK, "sample_complexity"),
        real_path=paths.TRAIN,
    output:
        out_path=paths.SAMPLE_COMPLEXITY_SET,
    params:
        n_heldout=lambda wc: study_cfg(wc, "sample_complexity")["n_heldout"],
        classes=lambda wc: study_cfg(wc, "sample_complexity")["classes"],
        size=lambda wc: wc.size,
        seed=derive_seed(config["seed"], "sample_complexity"),
    log:
        "logs/sample_complexity_set/{dataset}/n{size}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/sample_complexity_set.py"


use rule sample_complexity_set as sample_complexity_heldout with:
    output:
        out_path=paths.SAMPLE_COMPLEXITY_HELDOUT,
    params:
        n_heldout=lambda wc: study_cfg(wc, "sample_complexity")["n_heldout"],
        classes=lambda wc: study_cfg(wc, "sample_complexity")["classes"],
        size="heldout",
        seed=derive_seed(config["seed"], "sample_complexity"),
    log:
        "logs/sample_complexity_set/{dataset}/heldout.log",


rule sample_complexity_test:
    input:
        real_path=paths.TEST,
    output:
        out_path=paths.SAMPLE_COMPLEXITY_TEST,
    params:
        classes=lambda wc: study_cfg(wc, "sample_complexity")["classes"],
    log:
        "logs/sample_complexity_test/{dataset}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/real_class_subset.py"


rule train_sample_complexity:
    input:
        train_path=paths.SAMPLE_COMPLEXITY_SET,
        synthetic_path=[],
    output:
        model_out=paths.SAMPLE_COMPLEXITY_MODEL,
        history_out=paths.SAMPLE_COMPLEXITY_HISTORY,
    params:
        settings=lambda wc: settings.studies.sample_complexity_settings(config, wc.dataset, wc.regime, wc.size),
        seed=run_seed,
        checkpoint_path=paths.SAMPLE_COMPLEXITY_CHECKPOINT,
        settings_key="datasets.{dataset}.studies.sample_complexity",  # the config block named in its errors
    resources:
        gpu=1,
    log:
        "logs/train_sample_complexity/{dataset}/{regime}/n{size}/seed{seed}.log",
    benchmark:
        "benchmarks/train_sample_complexity/{dataset}/{regime}/n{size}/seed{seed}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_robust.py"


rule evaluate_sample_complexity:
    input:
        model_path=paths.SAMPLE_COMPLEXITY_MODEL,
        test_path=lambda wc: (paths.SAMPLE_COMPLEXITY_HELDOUT if wc.split == "synthetic" else paths.SAMPLE_COMPLEXITY_TEST
                              ).format(dataset=wc.dataset),
    output:
        out_csv=paths.SAMPLE_COMPLEXITY_EVAL,
    params:
        threat=lambda wc: settings.studies.sample_complexity_threat(config, wc.dataset),
        settings=lambda wc: settings.schema.canonical({**dataset_cfg(wc)["evaluation"], "autoattack": False,
                                                   "pgd_steps": study_cfg(wc, "sample_complexity")["attack_steps"]}),
        seed=config["seed"],
        row=lambda wc: {"regime": wc.regime, "size": wc.size, "evaluated_on": wc.split, "seed": int(wc.seed),
                        "architecture": settings.studies.sample_complexity_settings(config, wc.dataset, wc.regime, wc.size)["arch"]},
    resources:
        gpu=1,
    log:
        "logs/evaluate_sample_complexity/{dataset}/{regime}/n{size}/seed{seed}_{split}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/evaluate.py"


rule sample_complexity_study:
    input:
        eval_csvs=lambda wc: [paths.SAMPLE_COMPLEXITY_EVAL.format(split=split, **run) for run in
                              settings.studies.sample_complexity_runs(config, wc.dataset) for split in ("synthetic", "real")],
        train_sets=lambda wc: [paths.SAMPLE_COMPLEXITY_SET.format(**run) for run in
                               settings.studies.sample_complexity_runs(config, wc.dataset) for split in ("synthetic", "real")],
    output:
        out_csv=paths.SAMPLE_COMPLEXITY_TABLE,
        out_plot=paths.SAMPLE_COMPLEXITY_PLOT,
    log:
        "logs/sample_complexity_study/{dataset}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/sample_complexity_study.py"


use rule filter_synthetic as filter_study_mask with:
    input:
        labels_path=study_generator_path(paths.LABELS, "filter"),
    output:
        out_mask=paths.FILTER_STUDY_MASK,
        out_counts=paths.FILTER_STUDY_COUNTS,
    params:
        threshold=lambda wc: float(wc.threshold),
    log:
        "logs/filter_study_mask/{dataset}/t{threshold}.log",
    benchmark:
        "benchmarks/filter_study_mask/{dataset}/t{threshold}.tsv"


use rule transfer_set as filter_study_set with:
    input:
        images_path=study_generator_path(paths.IMAGES, "filter"),
        filter_path=paths.FILTER_STUDY_MASK,
        real_path=paths.TRAIN,
    output:
        out_path=paths.FILTER_STUDY_SET,
    params:
        k=lambda wc: dataset_cfg(wc)["generator_ranking"]["n_train"],
        seed=lambda wc: derive_seed(config["seed"], "transfer", settings.studies.study_generator(config, wc.dataset, "filter")),
    log:
        "logs/filter_study_set/{dataset}/t{threshold}.log",
    benchmark:
        "benchmarks/filter_study_set/{dataset}/t{threshold}.tsv"


use rule train_transfer as train_filter_study with:
    input:
        train_path=paths.FILTER_STUDY_SET,
        synthetic_path=[],
    output:
        model_out=paths.FILTER_STUDY_MODEL,
        history_out=paths.FILTER_STUDY_HISTORY,
    params:
        settings=lambda wc: settings.studies.filter_study_settings(config, wc.dataset),
        seed=run_seed,
        checkpoint_path=paths.FILTER_STUDY_CHECKPOINT,
        settings_key="datasets.{dataset}.studies.filter",  # the config block named in its errors
    log:
        "logs/train_filter_study/{dataset}/t{threshold}/seed{seed}.log",
    benchmark:
        "benchmarks/train_filter_study/{dataset}/t{threshold}/seed{seed}.tsv"


use rule evaluate_transfer as evaluate_filter_study with:
    input:
        model_path=paths.FILTER_STUDY_MODEL,
        test_path=paths.TEST,
    output:
        out_csv=paths.FILTER_STUDY_EVAL,
    params:
        threat=lambda wc: settings.schema.canonical(dataset_cfg(wc)["threats"][dataset_cfg(wc)["generator_ranking"]["threat"]]),
        settings=lambda wc: settings.schema.canonical({**dataset_cfg(wc)["evaluation"], "autoattack": False}),
        seed=config["seed"],
        row=lambda wc: {"threshold": float(wc.threshold), "seed": int(wc.seed)},
    log:
        "logs/evaluate_filter_study/{dataset}/t{threshold}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate_filter_study/{dataset}/t{threshold}/seed{seed}.tsv"


rule filter_study:
    input:
        counts_csvs=lambda wc: [paths.FILTER_STUDY_COUNTS.format(dataset=wc.dataset, threshold=t)
                                for t in settings.studies.filter_study_thresholds(config, wc.dataset)],
        eval_csvs=lambda wc: [paths.FILTER_STUDY_EVAL.format(dataset=wc.dataset, threshold=t, seed=s)
                              for t in settings.studies.filter_study_thresholds(config, wc.dataset)
                              for s in study_cfg(wc, "filter")["seeds"]],
    output:
        out_csv=paths.FILTER_STUDY_TABLE,
    params:
        thresholds=lambda wc: [float(t) for t in settings.studies.filter_study_thresholds(config, wc.dataset)],
    log:
        "logs/filter_study/{dataset}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/filter_study.py"


use rule train_discriminator as train_nonrobust_discriminator with:
    input:
        train_path=paths.DISCRIMINATION_REAL,
        synthetic_path=paths.DISCRIMINATION_SYNTHETIC,
        val_synthetic_path=paths.DISCRIMINATION_VALIDATION,
    output:
        model_out=paths.NONROBUST_DISCRIMINATOR_MODEL,
        history_out=paths.NONROBUST_DISCRIMINATOR_HISTORY,
    params:
        settings=lambda wc: settings.studies.nonrobust_discriminator_settings(config, wc.dataset, wc.arch),
        seed=lambda wc: derive_seed(config["seed"], "discriminator", wc.generator, wc.arch),
        checkpoint_path=paths.NONROBUST_DISCRIMINATOR_CHECKPOINT,
        settings_key="datasets.{dataset}.discrimination",  # the config block named in its errors
    log:
        "logs/train_nonrobust_discriminator/{dataset}/{generator}/{arch}.log",
    benchmark:
        "benchmarks/train_nonrobust_discriminator/{dataset}/{generator}/{arch}.tsv"


use rule evaluate_discriminator as evaluate_nonrobust_discriminator with:
    input:
        model_path=paths.NONROBUST_DISCRIMINATOR_MODEL,
        heldout_path=paths.DISCRIMINATION_HELDOUT,
    output:
        out_csv=paths.NONROBUST_DISCRIMINATOR_METRICS,
    params:
        eps=0.0,
        settings=lambda wc: settings.discrimination.discriminator_eval_settings(config, wc.dataset),
        seed=config["seed"],
        row=lambda wc: {"generator": wc.generator, "arch": wc.arch},
    log:
        "logs/evaluate_nonrobust_discriminator/{dataset}/{generator}/{arch}.log",
    benchmark:
        "benchmarks/evaluate_nonrobust_discriminator/{dataset}/{generator}/{arch}.tsv"


rule nonrobust_discriminator_study:
    input:
        metric_csvs=lambda wc: [paths.NONROBUST_DISCRIMINATOR_METRICS.format(dataset=wc.dataset, generator=g, arch=a)
                                for g in settings.discrimination.ranked_generators(config, wc.dataset)
                                for a in study_cfg(wc, "nonrobust_discriminators")["architectures"]],
        arc_summary=paths.ARC_SUMMARY,
    output:
        out_csv=paths.NONROBUST_DISCRIMINATOR_TABLE,
    log:
        "logs/nonrobust_discriminator_study/{dataset}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/nonrobust_discriminator_study.py"


# The mixture's runs and its members' are training variants (`on-<generator>`) of rules/recipe.smk.
rule mixture_study:
    input:
        eval_csvs=lambda wc: settings.studies.mixture_study_runs(config, wc.dataset, paths.RECIPE_EVAL),
    output:
        out_csv=paths.MIXTURE_STUDY_TABLE,
    params:
        mixture=lambda wc: study_cfg(wc, "mixture")["mixture"],
    log:
        "logs/mixture_study/{dataset}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/mixture_study.py"


rule theorem1:
    output:
        out_csv=paths.THEOREM1_TABLE,
        out_plot=paths.THEOREM1_PLOT,
    params:
        settings=lambda wc: settings.schema.canonical(study_cfg(wc, "theorem1")),
        seed=derive_seed(config["seed"], "theorem1"),
    log:
        "logs/theorem1/{dataset}.log",
    benchmark:
        "benchmarks/theorem1/{dataset}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/theorem1.py"


rule studies:
    input:
        settings.targets.study_targets(config),
