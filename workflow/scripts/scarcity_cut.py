from port.logs import logged_job
from port.scarcity import cut_training_set

with logged_job(snakemake):
    cut_training_set(train_path=snakemake.input.train_path, out_path=snakemake.output.out_path,
                     n_real=snakemake.params.n_real, seed=snakemake.params.seed)
