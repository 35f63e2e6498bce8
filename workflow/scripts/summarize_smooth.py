from port.logs import logged_job
from port.reporting import summarize_certification

with logged_job(snakemake):
    summarize_certification(list(snakemake.input.certificates), list(snakemake.input.models), snakemake.params.rows,
                            snakemake.params.radii, snakemake.params.sigma, snakemake.output.table,
                            snakemake.output.plot)
