from port.logs import logged_job
from port.scarcity import data_scarcity_study

with logged_job(snakemake):
    data_scarcity_study(eval_csvs=list(snakemake.input.eval_csvs), train_eval_csvs=list(snakemake.input.train_eval_csvs),
                        train_sets=list(snakemake.input.train_sets), model_paths=list(snakemake.input.model_paths),
                        out_csv=snakemake.output.out_csv, out_plot=snakemake.output.out_plot)
