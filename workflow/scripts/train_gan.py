from port.gan import train_gan
from port.logs import logged_job

with logged_job(snakemake):
    train_gan(snakemake.input.train, snakemake.output[0], snakemake.params.settings, snakemake.params.seed)
