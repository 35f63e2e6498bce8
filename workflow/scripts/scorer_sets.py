from port.discrimination import scorer_sets
from port.logs import logged_job

with logged_job(snakemake):
    scorer_sets(train_path=snakemake.input.train_path, synthetic_path=snakemake.input.synthetic_path,
                out_folds=snakemake.output.out_folds, out_pools=list(snakemake.output.out_pools),
                n_train=snakemake.params.n_train, seed=snakemake.params.seed)
