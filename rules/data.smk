rule prepare_data:
    input:
        unpack(lambda wc: port_inputs.source_inputs(config, wc.dataset)),  # npz sets named in config, checked
    output:
        train="results/{dataset}/data/train.h5",
        test="results/{dataset}/data/test.h5",
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
