from port.gan import train_gan
from port.logs import logged_job

with logged_job(snakemake):
    train_gan(train_path=snakemake.input.train_path, out_path=snakemake.output.out_path,
              settings=snakemake.params.settings, seed=snakemake.params.seed)
