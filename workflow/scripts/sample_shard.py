from port.generators import sample_shard
from port.logs import logged_job

with logged_job(snakemake):
    sample_shard(source=snakemake.params.source, out_path=snakemake.output.out_path,
               shard=int(snakemake.wildcards.shard), settings=snakemake.params.settings,
               seed=snakemake.params.seed, dataset=snakemake.wildcards.dataset)
