from port.discrimination import scorer_sets
from port.logs import logged_job

with logged_job(snakemake):
    scorer_sets(snakemake.input.train, snakemake.input.synthetic, snakemake.output.folds, list(snakemake.output.pools),
                snakemake.params.n_train, snakemake.params.seed)
