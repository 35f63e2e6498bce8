from port.discrimination import arc_table
from port.logs import logged_job

with logged_job(snakemake):
    arc_table(list(snakemake.input), snakemake.output.table, snakemake.output.plot)
