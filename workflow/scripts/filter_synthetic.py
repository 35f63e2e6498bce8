from port.labeling import filter_images
from port.logs import logged_job

with logged_job(snakemake):
    filter_images(labels_path=snakemake.input.labels_path, out_mask=snakemake.output.out_mask,
                  out_counts=snakemake.output.out_counts, threshold=snakemake.params.threshold)
