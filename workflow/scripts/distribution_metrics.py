from port.logs import logged_job
from port.ranking import distribution_metrics

with logged_job(snakemake):
    distribution_metrics(images_path=snakemake.input.images_path, train_path=snakemake.input.train_path,
                         lanet_path=snakemake.input.lanet_path, out_csv=snakemake.output.out_csv,
                         generator=snakemake.wildcards.generator, n_images=snakemake.params.n_images)
