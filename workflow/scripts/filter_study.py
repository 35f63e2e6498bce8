from port.logs import logged_job
from port.studies import filter_study

with logged_job(snakemake):
    filter_study(counts_csvs=list(snakemake.input.counts_csvs), eval_csvs=list(snakemake.input.eval_csvs),
                 thresholds=snakemake.params.thresholds, out_csv=snakemake.output.out_csv)
