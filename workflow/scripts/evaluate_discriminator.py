from port.discrimination import evaluate_discriminator
from port.logs import logged_job

with logged_job(snakemake):
    evaluate_discriminator(model_path=snakemake.input.model_path, heldout_path=snakemake.input.heldout_path,
                           out_csv=snakemake.output.out_csv, eps=snakemake.params.eps,
                           settings=snakemake.params.settings, seed=snakemake.params.seed,
                           row=snakemake.params.row)
