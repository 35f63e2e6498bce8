from port.logs import logged_job
from port.reporting import summarize

with logged_job(snakemake):
    summarize(list(snakemake.input), snakemake.output[0])
