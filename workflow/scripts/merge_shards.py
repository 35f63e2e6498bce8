from port.generators import merge_shards
from port.logs import logged_job

with logged_job(snakemake):
    merge_shards(list(snakemake.input), snakemake.output[0])
