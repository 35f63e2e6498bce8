from port.discrimination import discrimination_sets
from port.logs import logged_job

with logged_job(snakemake):
    discrimination_sets(snakemake.input.train, snakemake.input.test, snakemake.input.synthetic,
                        snakemake.output.real, snakemake.output.synthetic, snakemake.output.heldout,
                        snakemake.params.settings, snakemake.params.seed)
