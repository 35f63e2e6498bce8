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
        settings=lambda wc: port_config.training_settings(
            config, wc.dataset, wc.threat, wc.arch, wc.method
        ),
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
