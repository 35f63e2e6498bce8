"""Config helpers for the Snakefile: cross-field checks and the per-stage settings.

Each rule gets its stage's settings through `params:` as plain builtins with sorted keys,
so editing one value reruns exactly that stage and what depends on it, and reordering
keys in the YAML file reruns nothing.
"""

from __future__ import annotations

METHODS = ("baseline", "port")
TRAINING_RUN_KEYS = ("generator", "architectures", "seeds")


class ConfigError(ValueError):
    """A configuration that the schema accepts but that cannot work."""


def canonical(value):
    """Builtins with dict keys sorted recursively (a stable repr for Snakemake's params check)."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def check_config(config: dict) -> None:
    """Raise ConfigError naming the key when values contradict each other."""
    for name in config.get("default_datasets", []):
        if name not in config["datasets"]:
            raise ConfigError(f"default_datasets: '{name}' is not a key of datasets")
    for name, ds in config["datasets"].items():
        where = f"datasets.{name}"
        source = ds["source"]
        if source["kind"] == "npz" and not (source.get("train") and source.get("test")):
            raise ConfigError(f"{where}.source: kind npz needs `train` and `test` npz paths")
        if source["kind"] in ("cifar10", "cifar100") and not source.get("root"):
            raise ConfigError(f"{where}.source: kind {source['kind']} needs `root`")
        for gen_name, gen in ds["generators"].items():
            at = f"{where}.generators.{gen_name}"
            if gen["kind"] == "diffusers":
                for key in ("model", "n_images"):
                    if key not in gen:
                        raise ConfigError(f"{at}: kind diffusers needs `{key}`")
                if gen["n_shards"] > gen["n_images"]:
                    raise ConfigError(f"{at}: n_shards ({gen['n_shards']}) exceeds n_images ({gen['n_images']})")
            elif not gen.get("path"):
                raise ConfigError(f"{at}: kind npz needs `path`")
        for model_name, model in ds.get("diffusion_models", {}).items():
            levels = model.get("attention_levels", [])
            if any(level >= len(model["block_out_channels"]) for level in levels):
                raise ConfigError(f"{where}.diffusion_models.{model_name}.attention_levels: "
                                  f"levels must be below {len(model['block_out_channels'])}")
        if ds["training"]["generator"] not in ds["generators"]:
            raise ConfigError(f"{where}.training.generator: '{ds['training']['generator']}' "
                              f"is not a key of {where}.generators")
        if "smooth" in ds["threats"]:
            raise ConfigError(f"{where}.threats.smooth: the name `smooth` is taken by port_smooth.csv")
        for threat_name, threat in ds["threats"].items():
            if threat["eps"] > 0 and threat["step_size"] == 0:
                raise ConfigError(f"{where}.threats.{threat_name}.step_size: must be > 0 when eps > 0")


def trained_diffusion_model(config: dict, dataset: str, generator: str) -> str | None:
    """Name of the pipeline-trained DDPM a generator samples from, or None if external."""
    model = config["datasets"][dataset]["generators"][generator].get("model")
    return model if model in config["datasets"][dataset].get("diffusion_models", {}) else None


def generator_settings(config: dict, dataset: str, generator: str) -> dict:
    return canonical(config["datasets"][dataset]["generators"][generator])


def labeler_settings(config: dict, dataset: str, slot: str) -> dict:
    return canonical(config["datasets"][dataset]["labelers"][slot])


def _run_settings(ds: dict, method: str) -> dict:
    """The shared training block without the run keys. The baseline has no synthetic half, so
    its gamma is 1.0 (as in the summary tables): editing gamma does not rerun baselines."""
    settings = {k: v for k, v in ds["training"].items() if k not in TRAINING_RUN_KEYS}
    if method == "baseline":
        settings["gamma"] = 1.0
    return settings


def training_settings(config: dict, dataset: str, threat: str, arch: str, method: str = "port") -> dict:
    """What the trainer needs for one run: the shared training block, the arch and the threat."""
    ds = config["datasets"][dataset]
    return canonical({**_run_settings(ds, method), "arch": arch, "threat": ds["threats"][threat]})


def smoothing_epochs(config: dict, dataset: str) -> int:
    ds = config["datasets"][dataset]
    return ds["smoothing"].get("epochs", ds["training"]["epochs"])


def smoothing_settings(config: dict, dataset: str, arch: str, method: str = "port") -> dict:
    """The trainer's settings for stability training: the training block with the noise model."""
    ds = config["datasets"][dataset]
    smoothing = ds["smoothing"]
    settings = _run_settings(ds, method)
    settings["epochs"] = smoothing_epochs(config, dataset)
    return canonical({**settings, "arch": arch, "threat": None,
                      "smoothing": {"sigma": smoothing["sigma"], "beta": smoothing["beta"]}})


def certify_settings(config: dict, dataset: str) -> dict:
    smoothing = config["datasets"][dataset]["smoothing"]
    return canonical({**smoothing["certify"], "sigma": smoothing["sigma"]})


def smoothing_runs(config: dict, dataset: str) -> list[tuple[str, str, int]]:
    """(method, arch, seed) of every randomized-smoothing run of a dataset."""
    ds = config["datasets"][dataset]
    archs = ds["smoothing"].get("architectures", ds["training"]["architectures"])
    return [(method, arch, seed) for method in METHODS for arch in archs for seed in ds["training"]["seeds"]]


def run_paths(config: dict, dataset: str, threat: str, filename: str) -> list[str]:
    """Per-run files for every method, architecture and seed of one threat model."""
    training = config["datasets"][dataset]["training"]
    return [f"results/{dataset}/runs/{threat}/{method}/{arch}/seed{seed}/{filename}"
            for method in METHODS for arch in training["architectures"] for seed in training["seeds"]]


def final_targets(config: dict, datasets=None) -> list[str]:
    names = config.get("default_datasets", []) if datasets is None else datasets
    targets = []
    for name in names:
        ds = config["datasets"][name]
        targets += [f"results/{name}/port_{threat}.csv" for threat in ds["threats"]]
        if "smoothing" in ds:
            targets.append(f"results/{name}/port_smooth.csv")
        targets += [f"results/{name}/training_curves_{threat}.png" for threat in ds["threats"]]
        targets.append(f"results/{name}/synthetic/{ds['training']['generator']}/samples_per_class.png")
    return targets



def run_row(config: dict, dataset: str, method: str, arch: str, seed: int, epochs: int | None = None) -> dict:
    """The identity columns of one run in the summary tables (`epochs`: the run's, if not training's)."""
    training = config["datasets"][dataset]["training"]
    return {"method": method, "architecture": arch, "gamma": training["gamma"] if method == "port" else 1.0,
            "epochs": training["epochs"] if epochs is None else epochs, "seed": seed}
