rule train_robust:
    input:
        train_path=paths.TRAIN,
        synthetic_path=synthetic_input,
    output:
        model_out=paths.RUN_MODEL,
        history_out=report(
            paths.RUN_HISTORY,
            caption="../report/history.rst",
            category="Training curves",
            subcategory="{dataset} {threat}",
            labels={"method": "{method}", "arch": "{arch}", "seed": "{seed}"},
        ),
    params:
        settings=lambda wc: settings.training.training_settings(
            config, wc.dataset, wc.threat, wc.arch, wc.method
        ),
        seed=run_seed,
        checkpoint_path=paths.RUN_CHECKPOINT,
        settings_key="datasets.{dataset}.training",  # the config block named in its errors
    resources:
        gpu=1,  # a profile's set-resources gpu: N trains with DDP over N GPUs (same result)
    threads: 1
    log:
        "logs/train_robust/{dataset}/{threat}/{method}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/train_robust/{dataset}/{threat}/{method}/{arch}/seed{seed}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_robust.py"
