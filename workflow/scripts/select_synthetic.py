from port.logs import logged_job
from port.selection import select_images

with logged_job(snakemake):
    select_images(snakemake.input.images, snakemake.input.mask, snakemake.output[0], snakemake.wildcards.selection,
                  snakemake.params.k, snakemake.params.seed, scores_path=snakemake.input.scores or None,
                  n_groups=snakemake.params.n_groups, labels_path=snakemake.input.labels or None,
                  fraction=snakemake.params.fraction)
