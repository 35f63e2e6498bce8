from port.logs import logged_job
from port.smoothing import certify_dataset

with logged_job(snakemake):
    certify_dataset(model_path=snakemake.input.model_path, test_path=snakemake.input.test_path,
                    out_csv=snakemake.output.out_csv, settings=snakemake.params.settings,
                    seed=snakemake.params.seed, checkpoint_path=snakemake.params.checkpoint_path)
