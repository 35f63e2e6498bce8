from port.audit import audit_synthetic
from port.logs import logged_job

with logged_job(snakemake):
    audit_synthetic(images_path=snakemake.input.images_path, train_path=snakemake.input.train_path,
                    test_path=snakemake.input.test_path, lanet_path=snakemake.input.lanet_path,
                    out_path=snakemake.output.out_path, out_csv=snakemake.output.out_csv,
                    out_png=snakemake.output.out_png, generator=snakemake.wildcards.generator,
                    test_threshold=snakemake.params.test_threshold, train_threshold=snakemake.params.train_threshold)
