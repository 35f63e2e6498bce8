from port.labeling import prepare_labeler
from port.logs import logged_job

with logged_job(snakemake):
    prepare_labeler(snakemake.wildcards.slot, snakemake.input.train, snakemake.input.test, snakemake.output.model,
                    snakemake.output.metrics, snakemake.output.history, snakemake.params.checkpoint,
                    snakemake.params.settings, snakemake.params.seed)
