rule train_labeler:
    input:
        lambda wc: port_inputs.labeler_inputs(config, wc.dataset, wc.slot),  # settings' checkpoint, checked
        train_path=paths.TRAIN,
        test_path=paths.TEST,
    output:
        model_out=paths.LABELER_MODEL,
        history_out=paths.LABELER_HISTORY,
        metrics_out=paths.LABELER_METRICS,
    params:
        settings=lambda wc: settings.labeling.labeler_settings(config, wc.dataset, wc.slot),
        seed=lambda wc: derive_seed(config["seed"], "labeler", wc.slot),
        checkpoint_path=paths.LABELER_CHECKPOINT,
    resources:
        gpu=1,
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
        images_path=paths.IMAGES,
        lanet_path=paths.fill(paths.LABELER_MODEL, slot="lanet"),
        splitnet_path=paths.fill(paths.LABELER_MODEL, slot="splitnet"),
    output:
        out_path=paths.LABEL_SHARD,
    params:
        n_shards=lambda wc: dataset_cfg(wc)["pseudo_label"]["n_shards"],
        labels_from=lambda wc: settings.labeling.labels_from(config, wc.dataset, wc.generator),
        batch_size=lambda wc: dataset_cfg(wc)["pseudo_label"]["batch_size"],
        compute=lambda wc: settings.data.compute_settings(config, wc.dataset),
    resources:
        gpu=1,
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
        images=paths.IMAGES,
        shard_paths=shard_files(paths.LABEL_SHARD, lambda ds, wc: ds["pseudo_label"]["n_shards"]),
    output:
        out_path=paths.LABELS,
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
        labels_path=paths.LABELS,
    output:
        out_mask=paths.FILTER_MASK,
        out_counts=report(
            paths.FILTER_COUNTS,
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
        images_path=paths.IMAGES,
        filter_path=paths.FILTER_MASK,
        scores_path=selection_scores,
        labels_path=selection_labels,
        audit_path=selection_audit,
    output:
        out_path=paths.SELECTED,
    params:
        # a score group takes its whole group and `confidence` a fraction per class (no k);
        # the other selections take k images
        k=lambda wc: None if paths.group_of(wc.selection) is not None or wc.selection == "confidence"
        else dataset_cfg(wc)["selection"]["k"],
        n_groups=lambda wc: (
            dataset_cfg(wc)["score_groups"]["n_groups"] if paths.group_of(wc.selection) is not None else None
        ),
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


# A mixture's selection: each member's share of k from its own filtered images (port.mixture).
rule select_mixture:
    input:
        images_paths=mixture_member_files(paths.IMAGES),
        filter_paths=mixture_member_files(paths.FILTER_MASK),
        scores_paths=mixture_member_files(paths.SCORES, lambda wc: paths.needs_scores(wc.selection)),
        # with audit.drop, each member's near-duplicates of test images are left out
        audit_paths=mixture_member_files(paths.AUDIT, lambda wc: dataset_cfg(wc)["audit"]["drop"]),
        arc_summary=lambda wc: (
            [] if settings.generation.mixture_fractions(config, wc.dataset, wc.mixture) else paths.ARC_SUMMARY
        ),
    output:
        out_path=paths.MIXTURE_SELECTED,
        out_csv=paths.MIXTURE_SELECTION_SUMMARY,
    params:
        members=lambda wc: settings.generation.mixture_members(config, wc.dataset, wc.mixture),
        fractions=lambda wc: settings.generation.mixture_fractions(config, wc.dataset, wc.mixture),
        # weights arc: the grid bounds the largest possible ARC (port.mixture)
        eps_grid=lambda wc: (
            None if settings.generation.mixture_fractions(config, wc.dataset, wc.mixture) else dataset_cfg(wc)["discrimination"]["eps"]
        ),
        k=lambda wc: dataset_cfg(wc)["selection"]["k"],
        seed=lambda wc: derive_seed(config["seed"], "selection", wc.selection),
    priority: 10
    log:
        "logs/select_mixture/{dataset}/{mixture}/{selection}.log",
    benchmark:
        "benchmarks/select_mixture/{dataset}/{mixture}/{selection}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/select_mixture.py"
