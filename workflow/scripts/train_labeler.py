from port.labeling import prepare_labeler
from port.logs import logged_job

with logged_job(snakemake):
    prepare_labeler(slot=snakemake.wildcards.slot, train_path=snakemake.input.train_path,
                    test_path=snakemake.input.test_path, model_out=snakemake.output.model_out,
                    metrics_out=snakemake.output.metrics_out, history_out=snakemake.output.history_out,
                    checkpoint_path=snakemake.params.checkpoint_path, settings=snakemake.params.settings,
                    seed=snakemake.params.seed)
