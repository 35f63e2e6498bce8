from port.logs import logged_job
from port.studies import gamma_study

with logged_job(snakemake):
    gamma_study(eval_csvs=list(snakemake.input.eval_csvs), out_csv=snakemake.output.out_csv,
                out_plot=snakemake.output.out_plot)
