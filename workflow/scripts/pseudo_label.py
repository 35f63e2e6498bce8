from port.labeling import pseudo_label
from port.logs import logged_job

with logged_job(snakemake):
    pseudo_label(images_path=snakemake.input.images_path, lanet_path=snakemake.input.lanet_path,
                 splitnet_path=snakemake.input.splitnet_path, out_path=snakemake.output.out_path,
                 shard=int(snakemake.wildcards.shard), n_shards=snakemake.params.n_shards,
                 labels_from=snakemake.params.labels_from, batch_size=snakemake.params.batch_size,
                 compute=snakemake.params.compute)
