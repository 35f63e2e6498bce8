from port.logs import logged_job
from port.studies import mixture_study

with logged_job(snakemake):
    mixture_study(eval_csvs=list(snakemake.input.eval_csvs), mixture=snakemake.params.mixture,
                  out_csv=snakemake.output.out_csv)
