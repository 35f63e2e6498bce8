from port.logs import logged_job
from port.selection import select_images

with logged_job(snakemake):
    select_images(images_path=snakemake.input.images_path, filter_path=snakemake.input.filter_path,
                  out_path=snakemake.output.out_path, method=snakemake.wildcards.selection,
                  k=snakemake.params.k, seed=snakemake.params.seed,
                  scores_path=snakemake.input.scores_path or None, n_groups=snakemake.params.n_groups,
                  labels_path=snakemake.input.labels_path or None, fraction=snakemake.params.fraction,
                  audit_path=snakemake.input.audit_path or None)
