from port.artifacts import image_set_length
from port.logs import logged_job
from port.shards import merge_array_shards

with logged_job(snakemake):
    merge_array_shards(snakemake.input.shards, snakemake.output[0], image_set_length(snakemake.input.images))
