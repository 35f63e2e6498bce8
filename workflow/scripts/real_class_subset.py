from port.logs import logged_job
from port.studies import real_class_subset

with logged_job(snakemake):
    real_class_subset(real_path=snakemake.input.real_path, out_path=snakemake.output.out_path,
                      classes=snakemake.params.classes)
