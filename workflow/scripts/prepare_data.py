from port.data import prepare_dataset
from port.logs import logged_job

with logged_job(snakemake):
    prepare_dataset(snakemake.wildcards.dataset, snakemake.params.source, snakemake.params.seed,
                    snakemake.output.train, snakemake.output.test)
