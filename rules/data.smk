rule fetch_source:  # local (Snakefile localrules): the submitting host has the network
    output:
        out_dir=directory(paths.FETCHED_SOURCE),
    params:
        kind=lambda wc: dataset_cfg(wc)["source"]["kind"],
        url=lambda wc: dataset_cfg(wc)["source"].get("url"),
        md5=lambda wc: settings.schema.canonical(dataset_cfg(wc)["source"].get("md5")),
    log:
        "logs/fetch_source/{dataset}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fetch_source.py"


rule prepare_data:
    input:
        lambda wc: port_inputs.source_inputs(config, wc.dataset),  # the npz files `source` names, checked
        fetched=fetched_source,
    output:
        train_out=paths.TRAIN,
        test_out=paths.TEST,
    params:
        source=lambda wc: settings.schema.canonical(dataset_cfg(wc)["source"]),
        seed=config["seed"],
    log:
        "logs/prepare_data/{dataset}.log",
    benchmark:
        "benchmarks/prepare_data/{dataset}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/prepare_data.py"
