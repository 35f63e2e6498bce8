from port.logs import logged_job
from port.reporting import summarize_score_groups

with logged_job(snakemake):
    summarize_score_groups(snakemake.input.evals, snakemake.input.selections, snakemake.output.table,
                           snakemake.output.plot)
