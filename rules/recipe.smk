# The training-recipe study (`snakemake recipe`; not in the default target), whose rules also train the
# gamma sweep's variants (rules/studies.smk), and the RobustBench export of adversarial-training runs
# (`snakemake robustbench`).


rule train_recipe:
    input:
        train_path=paths.TRAIN,
        synthetic_path=lambda wc: settings.studies.recipe_synthetic(config, wc.dataset, wc.variant),
    output:
        model_out=paths.RECIPE_MODEL,
        history_out=paths.RECIPE_HISTORY,
    params:
        settings=lambda wc: settings.studies.recipe_settings(config, wc.dataset, wc.variant, wc.arch),
        seed=run_seed,
        checkpoint_path=paths.RECIPE_CHECKPOINT,
        settings_key=lambda wc: settings.studies.variant(config, wc.dataset, wc.variant)["key"],
    resources:
        gpu=1,
    threads: 1
    log:
        "logs/train_recipe/{dataset}/{variant}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/train_recipe/{dataset}/{variant}/{arch}/seed{seed}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_robust.py"


rule evaluate_recipe:
    input:
        model_path=paths.RECIPE_MODEL,
        test_path=paths.TEST,
    output:
        out_csv=paths.RECIPE_EVAL,
    params:
        threat=lambda wc: settings.studies.variant_threat(config, wc.dataset, wc.variant),
        settings=lambda wc: settings.studies.variant_evaluation(config, wc.dataset, wc.variant),
        row=lambda wc: settings.studies.recipe_row(config, wc.dataset, wc.variant, wc.arch, int(wc.seed)),
        seed=config["seed"],
    resources:
        gpu=1,
    log:
        "logs/evaluate_recipe/{dataset}/{variant}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate_recipe/{dataset}/{variant}/{arch}/seed{seed}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/evaluate.py"


rule summarize_recipe:
    input:
        eval_csvs=lambda wc: settings.studies.recipe_paths(config, wc.dataset, paths.RECIPE_EVAL),
    output:
        out_csv=paths.RECIPE_RUNS_TABLE,
        out_summary=report(
            paths.RECIPE_SUMMARY,
            caption="../report/recipe.rst",
            category="Results",
            labels={"dataset": "{dataset}", "table": "recipe study"},
        ),
    log:
        "logs/summarize_recipe/{dataset}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/summarize_recipe.py"


rule recipe:
    input:
        settings.targets.recipe_targets(config),


rule export_robustbench:
    input:
        model_path=paths.RUN_MODEL,
        eval_path=paths.RUN_EVAL,
    output:
        info_out=paths.ROBUSTBENCH_INFO,
        weights_out=paths.ROBUSTBENCH_WEIGHTS,
    params:
        run="{threat}/{method}/{arch}/seed{seed}",
        run_config=lambda wc: settings.evaluation.run_config(config, wc.dataset, wc.threat, wc.arch, wc.method),
    log:
        "logs/export_robustbench/{dataset}/{threat}/{method}/{arch}/seed{seed}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/export_robustbench.py"


rule robustbench:
    input:
        settings.targets.robustbench_targets(config),
