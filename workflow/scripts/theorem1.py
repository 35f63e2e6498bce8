from port.logs import logged_job
from port.theory import theorem1_check

with logged_job(snakemake):
    theorem1_check(settings=snakemake.params.settings, seed=snakemake.params.seed, out_csv=snakemake.output.out_csv,
                   out_plot=snakemake.output.out_plot)
