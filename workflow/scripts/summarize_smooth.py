from port.logs import logged_job
from port.reporting import summarize_certification

with logged_job(snakemake):
    summarize_certification(certificate_csvs=list(snakemake.input.certificate_csvs),
                            model_paths=list(snakemake.input.model_paths), rows=snakemake.params.rows,
                            radii=snakemake.params.radii, sigma=snakemake.params.sigma,
                            out_csv=snakemake.output.out_csv, out_summary=snakemake.output.out_summary,
                            out_plot=snakemake.output.out_plot)
