rule prepare_data:
    output:
        train_out=paths.TRAIN,
        test_out=paths.TEST,
    params:
        source=lambda wc: port_config.canonical(dataset_cfg(wc)["source"]),
        seed=config["seed"],
    log:
        "logs/prepare_data/{dataset}.log",
    benchmark:
        "benchmarks/prepare_data/{dataset}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/prepare_data.py"
