# Robust discrimination: real-vs-synthetic discriminators per generator and eps, ARC, and the
# per-image synthetic scores that adaptive selection ranks by (paper Sections 2.2 and 3.2).

DISC = "results/{dataset}/discriminators/{generator}"

from port.discrimination import SCORER_FOLDS  # cross-fitted scorers (see scorer_sets)


rule discrimination_sets:
    input:
        train="results/{dataset}/data/train.h5",
        test="results/{dataset}/data/test.h5",
        synthetic=f"{SYNTHETIC}/images.h5",
    output:
        real=f"{DISC}/data/real.h5",
        synthetic=f"{DISC}/data/synthetic.h5",
        heldout=f"{DISC}/data/heldout.h5",
    params:
        settings=lambda wc: port_config.discrimination_data_settings(config, wc.dataset),
        seed=lambda wc: derive_seed(config["seed"], "discriminator", wc.generator),
    log:
        "logs/discrimination_sets/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/discrimination_sets/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/discrimination_sets.py"


rule train_discriminator:
    input:
        train=f"{DISC}/data/real.h5",
        synthetic=f"{DISC}/data/synthetic.h5",
    output:
        model=f"{DISC}/eps{{eps_index}}/model.pt",
        history=f"{DISC}/eps{{eps_index}}/history.csv",
    params:
        settings=lambda wc: port_config.discriminator_settings(config, wc.dataset, discriminator_eps(wc)),
        seed=lambda wc: derive_seed(config["seed"], "discriminator", wc.generator, int(wc.eps_index)),
        checkpoint="results/{dataset}/checkpoints/discriminators/{generator}/eps{eps_index}.pt",
    log:
        "logs/train_discriminator/{dataset}/{generator}/eps{eps_index}.log",
    benchmark:
        "benchmarks/train_discriminator/{dataset}/{generator}/eps{eps_index}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_robust.py"


rule evaluate_discriminator:
    input:
        model=f"{DISC}/eps{{eps_index}}/model.pt",
        heldout=f"{DISC}/data/heldout.h5",
    output:
        f"{DISC}/eps{{eps_index}}/metrics.csv",
    params:
        eps=discriminator_eps,
        settings=lambda wc: port_config.discriminator_eval_settings(config, wc.dataset),
        seed=config["seed"],
        row=lambda wc: {"generator": wc.generator},
    log:
        "logs/evaluate_discriminator/{dataset}/{generator}/eps{eps_index}.log",
    benchmark:
        "benchmarks/evaluate_discriminator/{dataset}/{generator}/eps{eps_index}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/evaluate_discriminator.py"


rule arc_curve:
    input:
        lambda wc: [
            f"results/{wc.dataset}/discriminators/{wc.generator}/eps{i}/metrics.csv"
            for i in range(len(dataset_cfg(wc)["discrimination"]["eps"]))
        ],
    output:
        "results/{dataset}/arc/{generator}.csv",
    log:
        "logs/arc_curve/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/arc_curve/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/arc_curve.py"


rule arc:
    input:
        lambda wc: [f"results/{wc.dataset}/arc/{g}.csv" for g in port_config.ranked_generators(config, wc.dataset)],
    output:
        table=report(
            "results/{dataset}/arc.csv",
            caption="../report/arc.rst",
            category="Generators",
            labels={"dataset": "{dataset}", "table": "ARC"},
        ),
        plot=report(
            "results/{dataset}/arc.png",
            caption="../report/arc_plot.rst",
            category="Generators",
            labels={"dataset": "{dataset}", "figure": "robust discrimination"},
        ),
    log:
        "logs/arc/{dataset}.log",
    benchmark:
        "benchmarks/arc/{dataset}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/arc.py"


rule scorer_sets:
    input:
        train="results/{dataset}/data/train.h5",
        synthetic=f"{SYNTHETIC}/images.h5",
    output:
        folds=f"{DISC}/scorers/folds.h5",
        pools=[f"{DISC}/scorers/pool{fold}.h5" for fold in range(SCORER_FOLDS)],
    params:
        n_train=lambda wc: dataset_cfg(wc)["discrimination"]["n_train_synthetic"],
        seed=lambda wc: derive_seed(config["seed"], "scorer", wc.generator),
    log:
        "logs/scorer_sets/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/scorer_sets/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/scorer_sets.py"


rule train_scorer:
    input:
        train=f"{DISC}/data/real.h5",
        synthetic=f"{DISC}/scorers/pool{{fold}}.h5",
    output:
        model=f"{DISC}/scorers/fold{{fold}}/model.pt",
        history=f"{DISC}/scorers/fold{{fold}}/history.csv",
    params:
        settings=lambda wc: port_config.discriminator_settings(
            config, wc.dataset, dataset_cfg(wc)["scores"]["discriminator_eps"]),
        seed=lambda wc: derive_seed(config["seed"], "scorer", wc.generator, int(wc.fold)),
        checkpoint="results/{dataset}/checkpoints/discriminators/{generator}/scorer{fold}.pt",
    log:
        "logs/train_scorer/{dataset}/{generator}/fold{fold}.log",
    benchmark:
        "benchmarks/train_scorer/{dataset}/{generator}/fold{fold}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_robust.py"


rule score_shard:
    input:
        models=[f"{DISC}/scorers/fold{fold}/model.pt" for fold in range(SCORER_FOLDS)],
        folds=f"{DISC}/scorers/folds.h5",
        images=f"{SYNTHETIC}/images.h5",
    output:
        f"{SYNTHETIC}/scores/shard_{{shard}}.h5",
    params:
        settings=lambda wc: port_config.score_settings(config, wc.dataset),
        n_shards=lambda wc: dataset_cfg(wc)["scores"]["n_shards"],
    priority: 10
    log:
        "logs/score_shard/{dataset}/{generator}/{shard}.log",
    benchmark:
        "benchmarks/score_shard/{dataset}/{generator}/{shard}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/score_shard.py"


rule merge_scores:
    input:
        images=f"{SYNTHETIC}/images.h5",
        shards=shard_files(f"{SYNTHETIC}/scores/shard_{{shard}}.h5", lambda ds, wc: ds["scores"]["n_shards"]),
    output:
        f"{SYNTHETIC}/scores.h5",
    priority: 10
    log:
        "logs/merge_scores/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/merge_scores/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/merge_arrays.py"
