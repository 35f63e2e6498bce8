from port.evaluation import evaluate
from port.logs import logged_job

with logged_job(snakemake):
    evaluate(model_path=snakemake.input.model_path, test_path=snakemake.input.test_path,
             out_csv=snakemake.output.out_csv, threat=snakemake.params.threat,
             settings=snakemake.params.settings, seed=snakemake.params.seed, row=snakemake.params.row)
