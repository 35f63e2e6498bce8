from port.config import trainer_block
from port.logs import logged_job
from port.training import train

with logged_job(snakemake):
    train(snakemake.input.train, snakemake.output.model, snakemake.output.history, snakemake.params.checkpoint,
          snakemake.params.settings, snakemake.params.seed, synthetic_path=snakemake.input.synthetic or None,
          settings_key=trainer_block(snakemake.rule, snakemake.wildcards))
