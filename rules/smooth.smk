# Randomized-smoothing PORT (stability training) and Cohen et al. certification.


rule train_smooth:
    input:
        train_path=paths.TRAIN,
        synthetic_path=synthetic_input,
    output:
        model_out=paths.SMOOTH_MODEL,
        history_out=report(
            paths.SMOOTH_HISTORY,
            caption="../report/history.rst",
            category="Training curves",
            subcategory="{dataset} smoothing",
            labels={"method": "{method}", "arch": "{arch}", "seed": "{seed}"},
        ),
    params:
        settings=lambda wc: settings.smoothing.smoothing_settings(
            config, wc.dataset, wc.arch, wc.method
        ),
        seed=run_seed,
        checkpoint_path=paths.SMOOTH_CHECKPOINT,
        settings_key="datasets.{dataset}.training",  # the config block named in its errors
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
        model_path=paths.SMOOTH_MODEL,
        test_path=paths.TEST,
    output:
        out_csv=paths.CERTIFICATE,
    params:
        settings=lambda wc: settings.smoothing.certify_settings(config, wc.dataset),
        seed=config["seed"],
        checkpoint_path=paths.CERTIFY_CHECKPOINT,
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
        certificate_csvs=smoothing_runs(paths.CERTIFICATE),
        model_paths=smoothing_runs(paths.SMOOTH_MODEL),
    output:
        out_csv=report(
            paths.CERTIFIED_TABLE,
            caption="../report/certified.rst",
            category="Results",
            labels={"dataset": "{dataset}", "threat": "smoothing (l2 certified)"},
        ),
        out_summary=report(
            paths.CERTIFIED_SUMMARY,
            caption="../report/certified_summary.rst",
            category="Results",
            labels={"dataset": "{dataset}", "threat": "smoothing (over seeds)"},
        ),
        out_plot=report(
            paths.CERTIFIED_PLOT,
            caption="../report/certified.rst",
            category="Results",
            labels={"dataset": "{dataset}", "threat": "smoothing (plot)"},
        ),
    params:
        rows=lambda wc: [settings.training.run_row(m, a, s) for m, a, s in settings.smoothing.smoothing_runs(config, wc.dataset)],
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
