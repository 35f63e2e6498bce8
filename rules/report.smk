# Figures for the shareable report (`snakemake --report report.html`).


rule plot_synthetic:
    input:
        images_path=paths.IMAGES,
        labels_path=paths.LABELS,
        filter_path=paths.FILTER_MASK,
    output:
        per_class_png=report(
            paths.SAMPLES_PER_CLASS,
            caption="../report/samples_per_class.rst",
            category="Synthetic data",
            labels={"dataset": "{dataset}", "generator": "{generator}", "figure": "samples per class"},
        ),
        discarded_png=report(
            paths.DISCARDED,
            caption="../report/discarded.rst",
            category="Synthetic data",
            labels={"dataset": "{dataset}", "generator": "{generator}", "figure": "discarded images"},
        ),
    params:
        per_class=10,
        seed=config["seed"],
    log:
        "logs/plot_synthetic/{dataset}/{generator}.log",
    benchmark:
        "benchmarks/plot_synthetic/{dataset}/{generator}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/plot_synthetic.py"


rule plot_training_curves:
    input:
        history_csvs=lambda wc: settings.training.run_paths(config, wc.dataset, wc.threat, paths.RUN_HISTORY),
    output:
        out_png=report(
            paths.TRAINING_CURVES,
            caption="../report/training_curves.rst",
            category="Training curves",
            labels={"dataset": "{dataset}", "threat": "{threat}"},
        ),
    params:
        run_labels=lambda wc: settings.training.run_labels(config, wc.dataset),
    log:
        "logs/plot_training_curves/{dataset}/{threat}.log",
    benchmark:
        "benchmarks/plot_training_curves/{dataset}/{threat}.tsv"
    conda:
        ENV
    script:
        "../workflow/scripts/plot_training_curves.py"
