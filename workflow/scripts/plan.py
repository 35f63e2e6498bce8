from port.logs import logged_job
from port.plan import write_plan

with logged_job(snakemake):
    write_plan(config=snakemake.config, dataset=snakemake.wildcards.dataset, device=snakemake.params.device,
               out_csv=snakemake.output.out_csv)
