from port.logs import logged_job
from port.training import train

with logged_job(snakemake):
    train(train_path=snakemake.input.train_path, model_out=snakemake.output.model_out,
          history_out=snakemake.output.history_out, checkpoint_path=snakemake.params.checkpoint_path,
          settings=snakemake.params.settings, seed=snakemake.params.seed,
          synthetic_path=snakemake.input.synthetic_path or None,
          init_model=snakemake.input.get("init_model") or None,
          val_synthetic_path=snakemake.input.get("val_synthetic_path") or None,
          settings_key=snakemake.params.settings_key)
