from port.logs import logged_job
from port.ranking import rank_generators

with logged_job(snakemake):
    rank_generators(arc_summary_csv=snakemake.input.arc_summary_csv,
                    distribution_csvs=snakemake.input.distribution_csvs,
                    transfer_csvs=snakemake.input.transfer_csvs, out_csv=snakemake.output.out_csv)
