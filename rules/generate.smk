rule train_ddpm:
    input:
        train_path=paths.TRAIN,
    output:
        out_dir=directory(paths.DIFFUSION_MODEL),
    params:
        settings=lambda wc: settings.schema.canonical(dataset_cfg(wc)["diffusion_models"][wc.model]),
        seed=config["seed"],
    resources:
        gpu=1,
    priority: 10  # the synthetic-data chain is the critical path
    log:
        "logs/train_ddpm/{dataset}/{model}.log",
    benchmark:
        "benchmarks/train_ddpm/{dataset}/{model}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_ddpm.py"


rule train_gan:
    input:
        train_path=paths.TRAIN,
    output:
        out_path=paths.GAN_MODEL,
    params:
        settings=lambda wc: settings.schema.canonical(dataset_cfg(wc)["gan_models"][wc.model]),
        seed=config["seed"],
    resources:
        gpu=1,
    priority: 10
    log:
        "logs/train_gan/{dataset}/{model}.log",
    benchmark:
        "benchmarks/train_gan/{dataset}/{model}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/train_gan.py"


rule fetch_model:  # local (Snakefile localrules): the submitting host has the network
    output:
        out_dir=directory(paths.FETCHED_MODEL),
    params:
        model=lambda wc: settings.generation.remote_model(config, wc.dataset, wc.generator),
    log:
        "logs/fetch_model/{dataset}/{generator}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fetch_model.py"


rule sample_shard:
    input:
        generator_files,
        reference=npz_reference,
    output:
        out_path=paths.SAMPLE_SHARD,
    params:
        source=generator_source,
        settings=lambda wc: settings.generation.generator_settings(config, wc.dataset, wc.generator),
        seed=lambda wc: derive_seed(config["seed"], "generator", wc.generator),
    resources:
        gpu=1,
    priority: 10
    log:
        "logs/sample_shard/{dataset}/{generator}/{shard}.log",
    benchmark:
        "benchmarks/sample_shard/{dataset}/{generator}/{shard}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/sample_shard.py"


rule merge_shards:
    input:
        shard_paths=shard_files(paths.SAMPLE_SHARD, lambda ds, wc: ds["generators"][wc.generator]["n_shards"]),
    output:
        out_path=paths.IMAGES,
    priority: 10
    log:
        "logs/merge_shards/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/merge_shards/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/merge_shards.py"
