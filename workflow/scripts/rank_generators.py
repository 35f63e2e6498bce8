from port.logs import logged_job
from port.ranking import rank_generators

with logged_job(snakemake):
    rank_generators(snakemake.input.arc, snakemake.input.distribution, snakemake.input.transfer, snakemake.output[0])
