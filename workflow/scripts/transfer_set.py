from port.logs import logged_job
from port.selection import select_images

with logged_job(snakemake):
    select_images(snakemake.input.images, snakemake.input.mask, snakemake.output[0], "random", snakemake.params.k,
                  snakemake.params.seed, real_path=snakemake.input.train)
