from port.generators import train_ddpm
from port.logs import logged_job

with logged_job(snakemake):
    train_ddpm(snakemake.input.train, snakemake.output[0], snakemake.params.settings, snakemake.params.seed)
