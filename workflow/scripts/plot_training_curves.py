from port.logs import logged_job
from port.reporting import plot_training_curves

with logged_job(snakemake):
    plot_training_curves(list(snakemake.input), snakemake.params.run_labels, snakemake.output[0])
