from port.generators import make_shard
from port.logs import logged_job

with logged_job(snakemake):
    make_shard(snakemake.params.source, snakemake.output[0], int(snakemake.wildcards.shard),
               snakemake.params.settings, snakemake.params.seed, dataset=snakemake.wildcards.dataset,
               reference=snakemake.input.get("reference"))
