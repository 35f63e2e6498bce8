from port.discrimination import score_shard
from port.logs import logged_job

with logged_job(snakemake):
    score_shard(model_paths=list(snakemake.input.model_paths), folds_path=snakemake.input.folds_path,
                images_path=snakemake.input.images_path, out_path=snakemake.output.out_path,
                shard=int(snakemake.wildcards.shard), n_shards=snakemake.params.n_shards,
                settings=snakemake.params.settings)
