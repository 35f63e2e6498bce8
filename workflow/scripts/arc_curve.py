from port.discrimination import arc_curve
from port.logs import logged_job

with logged_job(snakemake):
    arc_curve(list(snakemake.input), snakemake.output[0])
