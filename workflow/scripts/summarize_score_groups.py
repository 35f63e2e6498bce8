from port.logs import logged_job
from port.reporting import summarize_score_groups

with logged_job(snakemake):
    summarize_score_groups(eval_csvs=snakemake.input.eval_csvs,
                           selected_paths=snakemake.input.selected_paths, out_csv=snakemake.output.out_csv,
                           out_png=snakemake.output.out_png)
