from port.evaluation import evaluate
from port.logs import logged_job

with logged_job(snakemake):
    evaluate(snakemake.input.model, snakemake.input.test, snakemake.output[0], snakemake.params.threat,
             snakemake.params.settings, snakemake.params.seed, snakemake.params.row)
