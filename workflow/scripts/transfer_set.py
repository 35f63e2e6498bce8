from port.logs import logged_job
from port.selection import select_images

with logged_job(snakemake):
    select_images(images_path=snakemake.input.images_path, filter_path=snakemake.input.filter_path,
                  out_path=snakemake.output.out_path, method="random", k=snakemake.params.k,
                  seed=snakemake.params.seed, real_path=snakemake.input.real_path)
