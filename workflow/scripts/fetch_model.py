from port.fetch import fetch_model
from port.logs import logged_job

with logged_job(snakemake, offline=False):
    fetch_model(model=snakemake.params.model, out_dir=snakemake.output.out_dir)
