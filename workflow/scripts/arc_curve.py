from port.discrimination import arc_curve
from port.logs import logged_job

with logged_job(snakemake):
    arc_curve(metric_csvs=list(snakemake.input.metric_csvs), out_csv=snakemake.output.out_csv)
