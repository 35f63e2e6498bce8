from port.data import prepare_dataset
from port.logs import logged_job

with logged_job(snakemake):
    prepare_dataset(name=snakemake.wildcards.dataset, source=snakemake.params.source,
                    seed=snakemake.params.seed, train_out=snakemake.output.train_out,
                    test_out=snakemake.output.test_out, fetched=snakemake.input.fetched)
