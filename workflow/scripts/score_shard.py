from port.discrimination import score_shard
from port.logs import logged_job

with logged_job(snakemake):
    score_shard(snakemake.input.model, snakemake.input.images, snakemake.output[0], int(snakemake.wildcards.shard),
                snakemake.params.n_shards, snakemake.params.settings)
