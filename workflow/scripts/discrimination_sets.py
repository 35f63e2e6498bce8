from port.discrimination import discrimination_sets
from port.logs import logged_job

with logged_job(snakemake):
    discrimination_sets(train_path=snakemake.input.train_path, test_path=snakemake.input.test_path,
                        synthetic_path=snakemake.input.synthetic_path, out_real=snakemake.output.out_real,
                        out_synthetic=snakemake.output.out_synthetic, out_validation=snakemake.output.out_validation,
                        out_heldout=snakemake.output.out_heldout, settings=snakemake.params.settings,
                        seed=snakemake.params.seed)
