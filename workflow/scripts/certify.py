from port.logs import logged_job
from port.smoothing import certify_dataset

with logged_job(snakemake):
    certify_dataset(snakemake.input.model, snakemake.input.test, snakemake.output[0], snakemake.params.settings,
                    snakemake.params.seed, checkpoint_path=snakemake.params.checkpoint)
