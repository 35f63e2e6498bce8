from port.logs import logged_job
from port.studies import nonrobust_discriminator_study

with logged_job(snakemake):
    nonrobust_discriminator_study(metric_csvs=list(snakemake.input.metric_csvs), arc_summary=snakemake.input.arc_summary,
                                  out_csv=snakemake.output.out_csv)
