# Randomized-smoothing PORT (stability training) and Cohen et al. certification.

SMOOTH_RUN = "results/{dataset}/smooth/{method}/{arch}/seed{seed}"


rule train_smooth:
    input:
        train="results/{dataset}/data/train.h5",
        synthetic=synthetic_input,
    output:
        model=f"{SMOOTH_RUN}/model.pt",
        history=report(
            f"{SMOOTH_RUN}/history.csv",
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
        checkpoint="results/{dataset}/checkpoints/smooth/{method}/{arch}/seed{seed}.pt",
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
        model=f"{SMOOTH_RUN}/model.pt",
        test="results/{dataset}/data/test.h5",
    output:
        "results/{dataset}/certify/{method}_{arch}_seed{seed}.csv",
    params:
        settings=lambda wc: port_config.certify_settings(config, wc.dataset),
        seed=config["seed"],
        checkpoint="results/{dataset}/checkpoints/certify/{method}_{arch}_seed{seed}.pt",
    log:
        "logs/certify/{dataset}/{method}_{arch}_seed{seed}.log",
    benchmark:
        "benchmarks/certify/{dataset}/{method}_{arch}_seed{seed}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/certify.py"


ruleorder: summarize_smooth > summarize


rule summarize_smooth:
    input:
        certificates=lambda wc: [
            f"results/{wc.dataset}/certify/{m}_{a}_seed{s}.csv"
            for m, a, s in port_config.smoothing_runs(config, wc.dataset)
        ],
        models=lambda wc: [
            f"results/{wc.dataset}/smooth/{m}/{a}/seed{s}/model.pt"
            for m, a, s in port_config.smoothing_runs(config, wc.dataset)
        ],
    output:
        table=report(
            "results/{dataset}/port_smooth.csv",
            caption="../report/port_smooth.rst",
            category="Results",
            labels={"dataset": "{dataset}", "threat": "smoothing (l2 certified)"},
        ),
        plot=report(
            "results/{dataset}/port_smooth.png",
            caption="../report/port_smooth.rst",
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
