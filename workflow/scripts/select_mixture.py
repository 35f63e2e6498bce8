from port.logs import logged_job
from port.mixture import select_mixture

with logged_job(snakemake):
    select_mixture(images_paths=list(snakemake.input.images_paths), filter_paths=list(snakemake.input.filter_paths),
                   scores_paths=list(snakemake.input.scores_paths), arc_summary=snakemake.input.arc_summary or None,
                   out_path=snakemake.output.out_path, out_csv=snakemake.output.out_csv,
                   mixture=snakemake.wildcards.mixture, members=snakemake.params.members,
                   method=snakemake.wildcards.selection, k=snakemake.params.k, seed=snakemake.params.seed,
                   fractions=snakemake.params.fractions, eps_grid=snakemake.params.eps_grid,
                   audit_paths=list(snakemake.input.audit_paths))
