from port.logs import logged_job
from port.ranking import distribution_metrics

with logged_job(snakemake):
    distribution_metrics(snakemake.input.images, snakemake.input.train, snakemake.input.lanet, snakemake.output[0],
                         snakemake.wildcards.generator, snakemake.params.n_images)
