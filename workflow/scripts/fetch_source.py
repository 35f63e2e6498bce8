from port.fetch import fetch_source
from port.logs import logged_job

with logged_job(snakemake, offline=False):
    fetch_source(kind=snakemake.params.kind, url=snakemake.params.url, md5=snakemake.params.md5,
                 out_dir=snakemake.output.out_dir)
