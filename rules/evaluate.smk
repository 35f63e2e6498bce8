rule evaluate:
    input:
        model_path=paths.RUN_MODEL,
        test_path=paths.TEST,
    output:
        out_csv=paths.RUN_EVAL,
    params:
        threat=lambda wc: settings.schema.canonical(dataset_cfg(wc)["threats"][wc.threat]),
        settings=lambda wc: settings.evaluation.evaluation_settings(config, wc.dataset, wc.method),
        row=lambda wc: settings.training.run_row(wc.method, wc.arch, int(wc.seed)),
        seed=config["seed"],
    resources:
        gpu=1,
    log:
        "logs/evaluate/{dataset}/{threat}/{method}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}/{threat}/{method}/{arch}/seed{seed}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/evaluate.py"


rule summarize:
    input:
        eval_csvs=lambda wc: settings.training.run_paths(config, wc.dataset, wc.threat, paths.RUN_EVAL),
    output:
        out_csv=report(
            paths.PORT_TABLE,
            caption="../report/port_table.rst",
            category="Results",
            labels={"dataset": "{dataset}", "threat": "{threat}"},
        ),
        out_summary=report(
            paths.SEED_SUMMARY,
            caption="../report/seed_summary.rst",
            category="Results",
            labels={"dataset": "{dataset}", "threat": "{threat} (over seeds)"},
        ),
    log:
        "logs/summarize/{dataset}/{threat}.log",
    benchmark:
        "benchmarks/summarize/{dataset}/{threat}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/summarize.py"


# `snakemake --cores all results/{dataset}/seeds.csv` (not in the default target): the table runs
# of every threat model over seed_study.seeds, by the same train_robust and evaluate rules.
rule summarize_seed_study:
    input:
        eval_csvs=lambda wc: settings.training.seed_study_paths(config, wc.dataset, paths.RUN_EVAL),
    output:
        out_csv=report(
            paths.SEED_STUDY,
            caption="../report/seed_summary.rst",
            category="Results",
            labels={"dataset": "{dataset}", "threat": "seed study, every threat"},
        ),
    log:
        "logs/summarize_seed_study/{dataset}.log",
    benchmark:
        "benchmarks/summarize_seed_study/{dataset}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/summarize_seed_study.py"
