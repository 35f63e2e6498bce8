# Ranking generators (paper Table 6, in small): ARC against transferred robustness (adversarial
# training on one generator's images alone) and two baselines; and PORT per score group (Figure 5).

TRANSFER = "results/{dataset}/transfer/{generator}"


rule transfer_set:
    input:
        images=f"{SYNTHETIC}/images.h5",
        mask=f"{SYNTHETIC}/filter.h5",
        train="results/{dataset}/data/train.h5",
    output:
        f"{SYNTHETIC}/transfer.h5",
    params:
        k=lambda wc: dataset_cfg(wc)["generator_ranking"]["n_train"],
        seed=lambda wc: derive_seed(config["seed"], "transfer", wc.generator),
    log:
        "logs/transfer_set/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/transfer_set/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/transfer_set.py"


rule train_transfer:
    input:
        train=f"{SYNTHETIC}/transfer.h5",
        synthetic=[],
    output:
        model=f"{TRANSFER}/model.pt",
        history=f"{TRANSFER}/history.csv",
    params:
        settings=lambda wc: port_config.transfer_settings(config, wc.dataset),
        seed=lambda wc: derive_seed(config["seed"], "transfer", wc.generator),
        checkpoint="results/{dataset}/checkpoints/transfer/{generator}.pt",
    log:
        "logs/train_transfer/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/train_transfer/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_robust.py"


rule evaluate_transfer:
    input:
        model=f"{TRANSFER}/model.pt",
        test="results/{dataset}/data/test.h5",
    output:
        f"{TRANSFER}/eval.csv",
    params:
        threat=lambda wc: port_config.canonical(dataset_cfg(wc)["threats"][dataset_cfg(wc)["generator_ranking"]["threat"]]),
        settings=lambda wc: port_config.canonical({**dataset_cfg(wc)["evaluation"], "autoattack": False}),
        seed=config["seed"],
        row=lambda wc: {"generator": wc.generator},
    log:
        "logs/evaluate_transfer/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/evaluate_transfer/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/evaluate.py"


rule distribution_metrics:
    input:
        images=f"{SYNTHETIC}/images.h5",
        train="results/{dataset}/data/train.h5",
        lanet="results/{dataset}/labelers/lanet/model.pt",
    output:
        f"{SYNTHETIC}/distribution_metrics.csv",
    params:
        n_images=lambda wc: dataset_cfg(wc)["generator_ranking"]["n_metric_images"],
    log:
        "logs/distribution_metrics/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/distribution_metrics/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/distribution_metrics.py"


rule rank_generators:
    input:
        arc="results/{dataset}/arc.csv",
        distribution=ranked(f"{SYNTHETIC}/distribution_metrics.csv"),
        transfer=ranked(f"{TRANSFER}/eval.csv"),
    output:
        report(
            "results/{dataset}/generators.csv",
            caption="../report/generators.rst",
            category="Generators",
            labels={"dataset": "{dataset}", "table": "generator ranking"},
        ),
    log:
        "logs/rank_generators/{dataset}.log",
    benchmark:
        "benchmarks/rank_generators/{dataset}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/rank_generators.py"


rule summarize_score_groups:
    input:
        evals=score_group_runs("eval.csv"),
        selections=lambda wc: [
            f"results/{wc.dataset}/synthetic/{dataset_cfg(wc)['training']['generator']}/selected/{m.removeprefix('port-')}.h5"
            for m in port_config.score_group_methods(config, wc.dataset)
        ],
    output:
        table=report(
            "results/{dataset}/score_groups.csv",
            caption="../report/score_groups.rst",
            category="Results",
            labels={"dataset": "{dataset}", "table": "score groups"},
        ),
        plot=report(
            "results/{dataset}/score_groups.png",
            caption="../report/score_groups.rst",
            category="Results",
            labels={"dataset": "{dataset}", "figure": "score groups"},
        ),
    log:
        "logs/summarize_score_groups/{dataset}.log",
    benchmark:
        "benchmarks/summarize_score_groups/{dataset}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/summarize_score_groups.py"
