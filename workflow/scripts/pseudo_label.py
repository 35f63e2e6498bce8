from port.labeling import pseudo_label
from port.logs import logged_job

with logged_job(snakemake):
    pseudo_label(snakemake.input.images, snakemake.input.lanet, snakemake.input.splitnet, snakemake.output[0],
                 int(snakemake.wildcards.shard), snakemake.params.n_shards, labels_from=snakemake.params.labels_from)
