from port.logs import logged_job
from port.studies import sample_complexity_set

with logged_job(snakemake):
    sample_complexity_set(images_path=snakemake.input.images_path, filter_path=snakemake.input.filter_path,
                          real_path=snakemake.input.real_path, out_path=snakemake.output.out_path,
                          size=snakemake.params.size, n_heldout=snakemake.params.n_heldout,
                          classes=snakemake.params.classes, seed=snakemake.params.seed)
