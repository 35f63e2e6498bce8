from port.logs import logged_job
from port.reporting import summarize_recipe

with logged_job(snakemake):
    summarize_recipe(list(snakemake.input), snakemake.output.runs, snakemake.output.summary)
