"""The `training` and `selection` blocks: one PORT or baseline run's trainer settings, the
runs of a threat model, and `TrainSettings`, what every trainer takes."""

from __future__ import annotations

from dataclasses import dataclass

from .. import paths
from ..errors import ConfigError, SettingsError
from .schema import canonical, check_values, schema_defaults

TRAINING_RUN_KEYS = ("generator", "architectures", "seeds")


def synthetic_batch_size(real_batch: int, synthetic_fraction: float) -> int:
    """Generated images per batch so that they make `synthetic_fraction` of it next to
    `real_batch` real ones: real * f / (1 - f), rounded (0.5 gives PORT's 1:1)."""
    count = round(real_batch * synthetic_fraction / (1.0 - synthetic_fraction))
    if count < 1:
        raise ValueError(f"synthetic_fraction {synthetic_fraction} leaves no synthetic image next to "
                         f"{real_batch} real ones")
    return count


@dataclass
class TrainSettings:
    """One training run's settings: what a builder here gives, completed by the schema's
    defaults (`training` and `trainer` blocks), so a stage that gives fewer keys (labelers,
    discriminators) trains as a PORT run would."""
    arch: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    gamma: float
    attack_batchnorm: str
    crop_padding: int
    flip: bool
    augment_synthetic: bool
    val_fraction: float
    val_attack_steps: int
    model_selection: str
    buffer_chunks: int
    loss: str
    trades_beta: float
    label_smoothing: float
    synthetic_fraction: float
    nesterov: bool
    weight_decay_bn: bool
    warmup_epochs: int
    eps_warmup_epochs: float
    ema_decay: float | None
    eps_warmup_from: float
    min_steps: int
    patience: int | None
    threat: dict | None
    smoothing: dict | None
    compute: dict | None

    @classmethod
    def from_dict(cls, settings: dict) -> "TrainSettings":
        fields = set(cls.__dataclass_fields__)
        unknown = set(settings) - fields
        if unknown:
            raise SettingsError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        defaults = {**schema_defaults("training"), **schema_defaults("trainer")}
        complete = {**{k: v for k, v in defaults.items() if k in fields}, **settings}
        check_values(complete, ("training", "trainer"), "training setting")
        cfg = cls(**complete)
        if cfg.eps_warmup_from and not (cfg.threat and 0 <= cfg.eps_warmup_from <= cfg.threat["eps"]):
            raise SettingsError(f"eps_warmup_from {cfg.eps_warmup_from} must lie between 0 and the threat's eps "
                                f"({cfg.threat['eps'] if cfg.threat else 'no threat'})")
        return cfg

    def eps_fraction(self, epochs_done: float) -> float:
        """The share of the threat's eps the attack uses after `epochs_done` epochs: a linear ramp
        from eps_warmup_from to the full eps over eps_warmup_epochs (1 when there is none)."""
        if not self.eps_warmup_epochs or not self.threat:
            return 1.0
        start = self.eps_warmup_from / self.threat["eps"]
        return min(1.0, start + (1.0 - start) * epochs_done / self.eps_warmup_epochs)

    @property
    def synthetic_batch_size(self) -> int:
        return synthetic_batch_size(self.batch_size, self.synthetic_fraction)


def run_settings(ds: dict, method: str) -> dict:
    """The shared training block without the run keys. The baseline has no synthetic half, so
    its gamma is 1.0 (as in the summary tables): editing gamma does not rerun baselines."""
    settings = {k: v for k, v in ds["training"].items() if k not in TRAINING_RUN_KEYS}
    settings["compute"] = canonical(ds.get("compute", {}))
    if method == paths.BASELINE:
        settings["gamma"] = 1.0
    return settings


def training_settings(config: dict, dataset: str, threat: str, arch: str, method: str = "port") -> dict:
    """What the trainer needs for one run: the shared training block, the arch and the threat."""
    ds = config["datasets"][dataset]
    return canonical({**run_settings(ds, method), "arch": arch, "threat": ds["threats"][threat]})


def check_trades(training: dict, where: str) -> None:
    """TRADES crafts its attack with BatchNorm frozen (Wang et al. 2023), so it asks for it explicitly."""
    if training.get("loss") == "trades" and training.get("attack_batchnorm") != "eval":
        raise ConfigError(f"{where}.attack_batchnorm: loss trades crafts its attack with BatchNorm frozen, "
                          f"set attack_batchnorm: eval")


def check_schedule(settings: dict, key: str, epochs_key: str) -> None:
    """A warm-up must end before the last epoch: otherwise the learning rate or the attack's eps
    never reach their configured values, while the tables report the configured eps."""
    ramps = [("warmup_epochs", "learning rate")] + ([("eps_warmup_epochs", "eps")] if settings.get("threat") else [])
    for name, what in ramps:
        if settings.get(name, 0) >= settings["epochs"]:
            raise ConfigError(f"{key}.{name}: {settings[name]} leaves no epoch at the full {what} out of the "
                              f"{settings['epochs']} epochs ({epochs_key})")


def real_set_batches(config: dict, dataset: str) -> list[tuple[str, int]]:
    """(config key, batch_size) of every trainer that trains on the real training set: the
    training block's (robust training, smoothing, the recipe variants) and the gamma and mixture
    studies' own. All hold out the training block's val_fraction."""
    ds, where = config["datasets"][dataset], f"datasets.{dataset}"
    studies = ds.get("studies", {})
    return [(f"{where}.training", ds["training"]["batch_size"])] + [
        (f"{where}.studies.{name}.training", studies[name]["training"]["batch_size"])
        for name in ("gamma", "mixture") if "batch_size" in studies.get(name, {}).get("training", {})]


def run_methods(config: dict, dataset: str) -> list[str]:
    """Run names of the result tables: the real-data baseline and PORT on each selection."""
    selections = [None, *config["datasets"][dataset]["selection"]["methods"]]
    return [paths.run_name(selection) for selection in selections]


def training_runs(config: dict, dataset: str, methods=None, seeds=None) -> list[tuple[str, str, int]]:
    """(method, arch, seed) of every adversarial-training run of a threat model, in table order
    (seeds: training.seeds unless given)."""
    training = config["datasets"][dataset]["training"]
    methods = run_methods(config, dataset) if methods is None else methods
    seeds = training["seeds"] if seeds is None else seeds
    return [(method, arch, seed) for method in methods for arch in training["architectures"] for seed in seeds]


def run_paths(config: dict, dataset: str, threat: str, pattern: str, methods=None, seeds=None) -> list[str]:
    """`pattern` (a paths.RUN_* file) for every method, architecture and seed of one threat model."""
    return [pattern.format(dataset=dataset, threat=threat, method=method, arch=arch, seed=seed)
            for method, arch, seed in training_runs(config, dataset, methods, seeds)]


def seed_study_paths(config: dict, dataset: str, pattern: str) -> list[str]:
    """`pattern` (a paths.RUN_* file) for the baseline and PORT runs of every threat model over
    `seed_study.seeds`: the same runs as the result tables', with more seeds (`seeds.csv`)."""
    ds = config["datasets"][dataset]
    return [path for threat in ds["threats"]
            for path in run_paths(config, dataset, threat, pattern, seeds=ds["seed_study"]["seeds"])]


def run_labels(config: dict, dataset: str) -> list[str]:
    """Legend labels of the runs, in run_paths order."""
    return [f"{method} {arch} seed{seed}" for method, arch, seed in training_runs(config, dataset)]


def run_row(method: str, arch: str, seed: int) -> dict:
    """The identity columns of one run in the summary tables. How it was trained (gamma, epochs)
    is read from the model's own metadata (port.models.training_record), not from the config."""
    selection = paths.selection_of(method)
    return {"method": paths.BASELINE if selection is None else "port", "selection": selection or "none",
            "architecture": arch, "seed": seed}


def check_training(config: dict, dataset: str) -> None:
    """The training block names a generator of the dataset, distinct selections and a workable loss."""
    ds, where = config["datasets"][dataset], f"datasets.{dataset}"
    if ds["training"]["generator"] not in ds["generators"]:
        raise ConfigError(f"{where}.training.generator: '{ds['training']['generator']}' "
                          f"is not a key of {where}.generators")
    methods = ds["selection"]["methods"]
    if len(set(methods)) != len(methods):
        raise ConfigError(f"{where}.selection.methods: repeated method in {methods}")
    check_trades(ds["training"], f"{where}.training")
