# The cost plan: what the dataset's run will take, before any job runs (port.plan). Local: it reads
# the DAG and the benchmark files, on the submitting host.


rule plan_dataset:
    input:
        rate_files=lambda wc: port_plan.rate_files(config["plan"]["device"]),
        imported_sets=lambda wc: port_plan.imported_sets(config, wc.dataset),
    output:
        out_csv=report(
            paths.PLAN,
            caption="../report/plan.rst",
            category="Plan",
            labels={"dataset": "{dataset}", "table": "cost plan"},
        ),
    params:
        dataset_config=lambda wc: settings.schema.canonical(dataset_cfg(wc)),
        device=config["plan"]["device"],
    log:
        "logs/plan/{dataset}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/plan.py"


rule plan:
    input:
        [paths.PLAN.format(dataset=name) for name in config["datasets"]],
