from port.logs import logged_job
from port.reporting import plot_training_curves

with logged_job(snakemake):
    plot_training_curves(history_csvs=list(snakemake.input.history_csvs),
                         run_labels=snakemake.params.run_labels, out_png=snakemake.output.out_png)
