from port.generators import train_ddpm
from port.logs import logged_job

with logged_job(snakemake):
    train_ddpm(train_path=snakemake.input.train_path, out_dir=snakemake.output.out_dir,
               settings=snakemake.params.settings, seed=snakemake.params.seed)
