RUN = "results/{dataset}/runs/{threat}/{method}/{arch}/seed{seed}"


def synthetic_input(wc):
    """PORT trains on the selected synthetic set; the baseline on real data only."""
    if wc.method == "baseline":
        return []
    ds = dataset_cfg(wc)
    generator = ds["training"]["generator"]
    return f"results/{wc.dataset}/synthetic/{generator}/selected/{ds['selection']['method']}.h5"


rule train_robust:
    input:
        train="results/{dataset}/data/train.h5",
        synthetic=synthetic_input,
    output:
        model=f"{RUN}/model.pt",
        history=report(
            f"{RUN}/history.csv",
            caption="../report/history.rst",
            category="Training curves",
            subcategory="{dataset} {threat}",
            labels={"method": "{method}", "arch": "{arch}", "seed": "{seed}"},
        ),
    params:
        settings=lambda wc: port_config.training_settings(config, wc.dataset, wc.threat, wc.arch),
        seed=run_seed,
        checkpoint="results/{dataset}/checkpoints/runs/{threat}/{method}/{arch}/seed{seed}.pt",
    threads: 1
    log:
        "logs/train_robust/{dataset}/{threat}/{method}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/train_robust/{dataset}/{threat}/{method}/{arch}/seed{seed}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_robust.py"
