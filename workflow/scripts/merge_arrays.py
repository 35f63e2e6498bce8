from port.artifacts import image_set_length
from port.logs import logged_job
from port.shards import merge_array_shards

with logged_job(snakemake):
    merge_array_shards(shard_paths=snakemake.input.shard_paths, out_path=snakemake.output.out_path,
                       n_images=image_set_length(snakemake.input.images))
