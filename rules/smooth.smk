# Randomized-smoothing PORT (stability training) and Cohen et al. certification.


rule train_smooth:
    input:
        train=paths.TRAIN,
        synthetic=synthetic_input,
    output:
        model=paths.SMOOTH_MODEL,
        history=report(
            paths.SMOOTH_HISTORY,
            caption="../report/history.rst",
            category="Training curves",
            subcategory="{dataset} smoothing",
            labels={"method": "{method}", "arch": "{arch}", "seed": "{seed}"},
        ),
    params:
        settings=lambda wc: port_config.smoothing_settings(
            config, wc.dataset, wc.arch, wc.method
        ),
        seed=run_seed,
        checkpoint=paths.SMOOTH_CHECKPOINT,
    resources:
        gpu=1,
    log:
        "logs/train_smooth/{dataset}/{method}/{arch}/seed{seed}.log",
    benchmark:
        "benchmarks/train_smooth/{dataset}/{method}/{arch}/seed{seed}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_robust.py"


rule certify:
    input:
        model=paths.SMOOTH_MODEL,
        test=paths.TEST,
    output:
        paths.CERTIFICATE,
    params:
        settings=lambda wc: port_config.certify_settings(config, wc.dataset),
        seed=config["seed"],
        checkpoint=paths.CERTIFY_CHECKPOINT,
    resources:
        gpu=1,
    log:
        "logs/certify/{dataset}/{method}_{arch}_seed{seed}.log",
    benchmark:
        "benchmarks/certify/{dataset}/{method}_{arch}_seed{seed}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/certify.py"


rule summarize_smooth:
    input:
        certificates=smoothing_runs(paths.CERTIFICATE),
        models=smoothing_runs(paths.SMOOTH_MODEL),
    output:
        table=report(
            paths.CERTIFIED_TABLE,
            caption="../report/certified.rst",
            category="Results",
            labels={"dataset": "{dataset}", "threat": "smoothing (l2 certified)"},
        ),
        plot=report(
            paths.CERTIFIED_PLOT,
            caption="../report/certified.rst",
            category="Results",
            labels={"dataset": "{dataset}", "threat": "smoothing (plot)"},
        ),
    params:
        rows=lambda wc: [
            port_config.run_row(
                config, wc.dataset, m, a, s, port_config.smoothing_epochs(config, wc.dataset)
            )
            for m, a, s in port_config.smoothing_runs(config, wc.dataset)
        ],
        radii=lambda wc: config["datasets"][wc.dataset]["smoothing"]["radii"],
        sigma=lambda wc: config["datasets"][wc.dataset]["smoothing"]["sigma"],
    log:
        "logs/summarize_smooth/{dataset}.log",
    benchmark:
        "benchmarks/summarize_smooth/{dataset}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/summarize_smooth.py"
