from port.logs import logged_job
from port.reporting import summarize

with logged_job(snakemake):
    summarize(eval_csvs=list(snakemake.input.eval_csvs), out_csv=snakemake.output.out_csv,
              out_summary=snakemake.output.out_summary)
