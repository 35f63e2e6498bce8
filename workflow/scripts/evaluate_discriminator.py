from port.discrimination import evaluate_discriminator
from port.logs import logged_job

with logged_job(snakemake):
    evaluate_discriminator(snakemake.input.model, snakemake.input.heldout, snakemake.output[0], snakemake.params.eps,
                           snakemake.params.settings, snakemake.params.seed, snakemake.params.row)
