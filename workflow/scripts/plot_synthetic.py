from port.logs import logged_job
from port.reporting import plot_synthetic_grids

with logged_job(snakemake):
    plot_synthetic_grids(snakemake.input.images, snakemake.input.labels, snakemake.input.mask,
                         snakemake.output.per_class, snakemake.output.discarded, snakemake.params.per_class,
                         snakemake.params.seed)
