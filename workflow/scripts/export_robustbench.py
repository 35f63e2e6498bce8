from port.export import export_robustbench
from port.logs import logged_job

with logged_job(snakemake):
    export_robustbench(model_path=snakemake.input.model_path, eval_path=snakemake.input.eval_path,
                       info_out=snakemake.output.info_out, weights_out=snakemake.output.weights_out,
                       run=snakemake.params.run, dataset=snakemake.wildcards.dataset,
                       run_config=snakemake.params.run_config)
