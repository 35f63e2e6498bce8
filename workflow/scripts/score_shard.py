from port.discrimination import score_shard
from port.logs import logged_job

with logged_job(snakemake):
    score_shard(list(snakemake.input.models), snakemake.input.folds, snakemake.input.images, snakemake.output[0],
                int(snakemake.wildcards.shard), snakemake.params.n_shards, snakemake.params.settings)
