from port.logs import logged_job
from port.studies import sample_complexity_study

with logged_job(snakemake):
    sample_complexity_study(eval_csvs=list(snakemake.input.eval_csvs), train_sets=list(snakemake.input.train_sets),
                            out_csv=snakemake.output.out_csv, out_plot=snakemake.output.out_plot)
