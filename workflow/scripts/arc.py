from port.discrimination import arc_table
from port.logs import logged_job

with logged_job(snakemake):
    arc_table(curve_csvs=list(snakemake.input.curve_csvs), out_table=snakemake.output.out_table,
              out_summary=snakemake.output.out_summary, out_plot=snakemake.output.out_plot)
