from port.generators import merge_shards
from port.logs import logged_job

with logged_job(snakemake):
    merge_shards(shard_paths=list(snakemake.input.shard_paths), out_path=snakemake.output.out_path)
