from port.logs import logged_job
from port.reporting import summarize_seed_study

with logged_job(snakemake):
    summarize_seed_study(eval_csvs=list(snakemake.input.eval_csvs), out_csv=snakemake.output.out_csv)
