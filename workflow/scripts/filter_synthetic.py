from port.labeling import filter_images
from port.logs import logged_job

with logged_job(snakemake):
    filter_images(snakemake.input[0], snakemake.output.mask, snakemake.output.counts, snakemake.params.threshold)
