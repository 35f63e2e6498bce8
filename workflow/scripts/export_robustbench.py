from port.export import export_robustbench
from port.logs import logged_job

with logged_job(snakemake):
    export_robustbench(snakemake.input.model, snakemake.input.evaluation, snakemake.output.info,
                       snakemake.output.weights, run=snakemake.params.run, dataset=snakemake.wildcards.dataset,
                       run_config=snakemake.params.run_config)
