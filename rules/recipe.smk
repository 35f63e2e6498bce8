# The training-recipe study (`snakemake recipe`; not in the default target) and the RobustBench
# export of adversarial-training runs (`snakemake robustbench`).

RECIPE = "results/{dataset}/recipe/{variant}/{arch}/seed{seed}"
ROBUSTBENCH = "results/{dataset}/robustbench/{threat}/{method}/{arch}/seed{seed}"


rule train_recipe:
    input:
        train="results/{dataset}/data/train.h5",
        synthetic=lambda wc: port_config.recipe_synthetic(config, wc.dataset, wc.variant),
    output:
        model=f"{RECIPE}/model.pt",
        history=f"{RECIPE}/history.csv",
    params:
        settings=lambda wc: port_config.recipe_settings(config, wc.dataset, wc.variant, wc.arch),
        seed=run_seed,
        checkpoint="results/{dataset}/checkpoints/recipe/{variant}/{arch}/seed{seed}.pt",
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
        model=f"{RECIPE}/model.pt",
        test="results/{dataset}/data/test.h5",
    output:
        f"{RECIPE}/eval.csv",
    params:
        threat=lambda wc: port_config.canonical(dataset_cfg(wc)["threats"][dataset_cfg(wc)["recipe_study"]["threat"]]),
        settings=lambda wc: port_config.canonical(dataset_cfg(wc)["evaluation"]),
        row=lambda wc: port_config.recipe_row(config, wc.dataset, wc.variant, wc.arch, int(wc.seed)),
        seed=config["seed"],
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
        lambda wc: port_config.recipe_paths(config, wc.dataset, "eval.csv"),
    output:
        runs="results/{dataset}/recipe.csv",
        summary=report(
            "results/{dataset}/recipe_summary.csv",
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
        port_config.recipe_targets(config),


rule export_robustbench:
    input:
        model=f"{RUN}/model.pt",
        evaluation=f"{RUN}/eval.csv",
    output:
        info=f"{ROBUSTBENCH}.json",
        weights=f"{ROBUSTBENCH}.pt",
    params:
        run="{threat}/{method}/{arch}/seed{seed}",
        run_config=lambda wc: port_config.run_config(config, wc.dataset, wc.threat, wc.arch, wc.method),
    log:
        "logs/export_robustbench/{dataset}/{threat}/{method}/{arch}/seed{seed}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/export_robustbench.py"


rule robustbench:
    input:
        port_config.robustbench_targets(config),
