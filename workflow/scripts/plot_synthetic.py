from port.logs import logged_job
from port.reporting import plot_synthetic_grids

with logged_job(snakemake):
    plot_synthetic_grids(images_path=snakemake.input.images_path, labels_path=snakemake.input.labels_path,
                         filter_path=snakemake.input.filter_path,
                         per_class_png=snakemake.output.per_class_png,
                         discarded_png=snakemake.output.discarded_png, per_class=snakemake.params.per_class,
                         seed=snakemake.params.seed)
