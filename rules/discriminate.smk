# Robust discrimination: real-vs-synthetic discriminators per generator and eps, ARC, and the
# per-image synthetic scores that adaptive selection ranks by (paper Sections 2.2 and 3.2).


rule discrimination_sets:
    input:
        train=paths.TRAIN,
        test=paths.TEST,
        synthetic=paths.IMAGES,
    output:
        real=paths.DISCRIMINATION_REAL,
        synthetic=paths.DISCRIMINATION_SYNTHETIC,
        heldout=paths.DISCRIMINATION_HELDOUT,
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
        train=paths.DISCRIMINATION_REAL,
        synthetic=paths.DISCRIMINATION_SYNTHETIC,
    output:
        model=paths.DISCRIMINATOR_MODEL,
        history=paths.DISCRIMINATOR_HISTORY,
    params:
        settings=lambda wc: port_config.discriminator_settings(config, wc.dataset, discriminator_eps(wc)),
        seed=lambda wc: derive_seed(config["seed"], "discriminator", wc.generator, int(wc.eps_index)),
        checkpoint=paths.DISCRIMINATOR_CHECKPOINT,
    resources:
        gpu=1,
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
        model=paths.DISCRIMINATOR_MODEL,
        heldout=paths.DISCRIMINATION_HELDOUT,
    output:
        paths.DISCRIMINATOR_METRICS,
    params:
        eps=discriminator_eps,
        settings=lambda wc: port_config.discriminator_eval_settings(config, wc.dataset),
        seed=config["seed"],
        row=lambda wc: {"generator": wc.generator},
    resources:
        gpu=1,
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
            paths.DISCRIMINATOR_METRICS.format(dataset=wc.dataset, generator=wc.generator, eps_index=i)
            for i in range(len(dataset_cfg(wc)["discrimination"]["eps"]))
        ],
    output:
        paths.ARC_CURVE,
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
        ranked(paths.ARC_CURVE),
    output:
        table=report(
            paths.ARC_TABLE,
            caption="../report/arc.rst",
            category="Generators",
            labels={"dataset": "{dataset}", "table": "ARC"},
        ),
        plot=report(
            paths.ARC_PLOT,
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


rule score_shard:
    input:
        model=lambda wc: paths.DISCRIMINATOR_MODEL.format(
            dataset=wc.dataset, generator=wc.generator,
            eps_index=port_config.score_discriminator_index(config, wc.dataset)),
        images=paths.IMAGES,
    output:
        paths.SCORE_SHARD,
    params:
        settings=lambda wc: port_config.score_settings(config, wc.dataset),
        n_shards=lambda wc: dataset_cfg(wc)["scores"]["n_shards"],
    resources:
        gpu=1,
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
        images=paths.IMAGES,
        shards=shard_files(paths.SCORE_SHARD, lambda ds, wc: ds["scores"]["n_shards"]),
    output:
        paths.SCORES,
    priority: 10
    log:
        "logs/merge_scores/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/merge_scores/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/merge_arrays.py"
