# The audit of every synthetic set against the real test and training sets (port.audit): between
# the filter and the selection, which drops near-duplicates of test images when audit.drop is true.


rule audit_synthetic:
    input:
        images_path=paths.IMAGES,
        train_path=paths.TRAIN,
        test_path=paths.TEST,
        lanet_path=paths.fill(paths.LABELER_MODEL, slot="lanet"),
    output:
        out_path=paths.AUDIT,
        out_csv=report(
            paths.AUDIT_TABLE,
            caption="../report/audit.rst",
            category="Synthetic data",
            labels={"dataset": "{dataset}", "generator": "{generator}", "table": "audit"},
        ),
        out_png=report(
            paths.AUDIT_PLOT,
            caption="../report/audit.rst",
            category="Synthetic data",
            labels={"dataset": "{dataset}", "generator": "{generator}", "figure": "audit"},
        ),
    params:
        test_threshold=lambda wc: dataset_cfg(wc)["audit"]["test_threshold"],
        train_threshold=lambda wc: dataset_cfg(wc)["audit"]["train_threshold"],
    resources:
        gpu=1,
    priority: 10  # the training generator's selection waits for it: the synthetic-data chain
    log:
        "logs/audit_synthetic/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/audit_synthetic/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/audit_synthetic.py"
