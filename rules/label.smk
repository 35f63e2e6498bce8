rule train_labeler:
    input:
        train="results/{dataset}/data/train.h5",
        test="results/{dataset}/data/test.h5",
    output:
        model="results/{dataset}/labelers/{slot}/model.pt",
        history="results/{dataset}/labelers/{slot}/history.csv",
        metrics="results/{dataset}/labelers/{slot}/metrics.csv",
    params:
        settings=lambda wc: port_config.labeler_settings(config, wc.dataset, wc.slot),
        seed=lambda wc: derive_seed(config["seed"], "labeler", wc.slot),
        checkpoint="results/{dataset}/checkpoints/labelers/{slot}.pt",
    log:
        "logs/train_labeler/{dataset}/{slot}.log",
    benchmark:
        "benchmarks/train_labeler/{dataset}/{slot}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_labeler.py"


rule pseudo_label:
    input:
        images=f"{SYNTHETIC}/images.h5",
        lanet="results/{dataset}/labelers/lanet/model.pt",
        splitnet="results/{dataset}/labelers/splitnet/model.pt",
    output:
        f"{SYNTHETIC}/labels/shard_{{shard}}.h5",
    params:
        n_shards=lambda wc: dataset_cfg(wc)["pseudo_label"]["n_shards"],
        labels_from=lambda wc: port_config.labels_from(config, wc.dataset, wc.generator),
    priority: 10  # the synthetic-data chain is the critical path
    log:
        "logs/pseudo_label/{dataset}/{generator}/{shard}.log",
    benchmark:
        "benchmarks/pseudo_label/{dataset}/{generator}/{shard}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/pseudo_label.py"


rule merge_labels:
    input:
        images=f"{SYNTHETIC}/images.h5",
        shards=shard_files(f"{SYNTHETIC}/labels/shard_{{shard}}.h5", lambda ds, wc: ds["pseudo_label"]["n_shards"]),
    output:
        f"{SYNTHETIC}/labels.h5",
    priority: 10
    log:
        "logs/merge_labels/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/merge_labels/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/merge_arrays.py"


rule filter_synthetic:
    input:
        "results/{dataset}/synthetic/{generator}/labels.h5",
    output:
        mask="results/{dataset}/synthetic/{generator}/filter.h5",
        counts=report(
            "results/{dataset}/synthetic/{generator}/filter_counts.csv",
            caption="../report/filter_counts.rst",
            category="Synthetic data",
            labels={"dataset": "{dataset}", "generator": "{generator}", "table": "filter counts"},
        ),
    params:
        threshold=lambda wc: dataset_cfg(wc)["filter"]["threshold"],
    priority: 10
    log:
        "logs/filter_synthetic/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/filter_synthetic/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/filter_synthetic.py"


rule select_synthetic:
    input:
        images=f"{SYNTHETIC}/images.h5",
        mask=f"{SYNTHETIC}/filter.h5",
        scores=selection_scores,
        labels=selection_labels,
    output:
        f"{SYNTHETIC}/selected/{{selection}}.h5",
    params:
        k=lambda wc: None if wc.selection.startswith("group") or wc.selection == "confidence" else dataset_cfg(wc)["selection"]["k"],
        n_groups=lambda wc: dataset_cfg(wc)["score_groups"]["n_groups"] if wc.selection.startswith("group") else None,
        fraction=lambda wc: dataset_cfg(wc)["selection"]["fraction"] if wc.selection == "confidence" else None,
        seed=lambda wc: derive_seed(config["seed"], "selection", wc.selection),
    priority: 10
    log:
        "logs/select_synthetic/{dataset}/{generator}/{selection}.log",
    benchmark:
        "benchmarks/select_synthetic/{dataset}/{generator}/{selection}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/select_synthetic.py"
