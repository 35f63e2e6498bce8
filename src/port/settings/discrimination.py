"""The `discrimination`, `scores` and `generator_ranking` blocks: the robust
real-vs-synthetic discriminators (ARC), the cross-fitted scorers and transferred robustness."""

from __future__ import annotations

from .. import paths
from ..errors import ConfigError
from .data import compute_settings
from .generation import is_mixture
from .schema import canonical
from .threats import step_size
from .training import run_settings


def discriminator_settings(config: dict, dataset: str, eps: float, warmup_from: float = 0.0) -> dict:
    """Trainer settings of the robust discriminator at one eps: balanced real-vs-synthetic
    batches (gamma 0.5), linf PGD at eps ramped up from `warmup_from` (0, or the curriculum's
    previous grid eps) over `eps_warmup_epochs` (a guard against collapse to a constant
    prediction when PGD at the full eps starts on a network that does not separate yet), trained
    until the robust accuracy on the balanced validation set (real split plus as many held-back
    synthetic images) has not improved for `patience` epochs, at most `epochs`, and the weights
    of its best epoch. Both halves get the same crop and flip: augmenting one class only (a
    zero border on real images alone) would be a feature that tells the classes apart."""
    ds = config["datasets"][dataset]
    disc = ds["discrimination"]
    threat = None
    if eps > 0:
        threat = {"norm": "linf", "eps": eps, "step_size": step_size(eps, disc["steps"], disc["step_factor"]),
                  "steps": disc["steps"]}
    keys = ("arch", "epochs", "batch_size", "lr", "momentum", "weight_decay", "crop_padding", "flip")
    return canonical({**{k: disc[k] for k in keys}, "gamma": 0.5, "threat": threat, "model_selection": "best",
                      "patience": disc["patience"],
                      "augment_synthetic": True, "eps_warmup_epochs": disc["eps_warmup_epochs"] if threat else 0.0,
                      # only under the curriculum: the settings (and jobs) without it stay as they were
                      **({"eps_warmup_from": warmup_from} if threat and warmup_from else {}),
                      "val_fraction": disc["val_fraction"], "val_attack_steps": disc["steps"],
                      "compute": compute_settings(config, dataset)})


def scorer_settings(config: dict, dataset: str) -> dict:
    """discriminator_settings at `scores.discriminator_eps` for the two cross-fitted scorers, trained
    for the fixed `epochs` and kept at the last: their pools split all the synthetic images, so
    none is left over for a validation set to stop on."""
    settings = discriminator_settings(config, dataset, config["datasets"][dataset]["scores"]["discriminator_eps"])
    return canonical({**{k: v for k, v in settings.items() if k != "patience"}, "model_selection": "last"})


def curriculum_parent(config: dict, dataset: str, eps_index: int) -> int | None:
    """The grid point whose trained discriminator (same generator and seed) the one at `eps_index` starts
    from under `discrimination.curriculum`; None: it starts from random weights."""
    return eps_index - 1 if config["datasets"][dataset]["discrimination"]["curriculum"] and eps_index > 0 else None


def grid_discriminator_settings(config: dict, dataset: str, eps_index: int) -> dict:
    """discriminator_settings at grid point `eps_index`; under the curriculum the eps warm-up starts
    from the previous grid eps, the one its initial weights were trained at."""
    grid = config["datasets"][dataset]["discrimination"]["eps"]
    parent = curriculum_parent(config, dataset, eps_index)
    return discriminator_settings(config, dataset, grid[eps_index], 0.0 if parent is None else grid[parent])


def arc_curve_inputs(config: dict, dataset: str, generator: str) -> list[str]:
    """The metrics of one generator's discriminators: every discrimination seed and eps."""
    disc = config["datasets"][dataset]["discrimination"]
    return [paths.DISCRIMINATOR_METRICS.format(dataset=dataset, generator=generator, eps_index=i, seed=seed)
            for seed in disc["seeds"] for i in range(len(disc["eps"]))]


def discrimination_data_settings(config: dict, dataset: str) -> dict:
    disc = config["datasets"][dataset]["discrimination"]
    return canonical({k: disc[k] for k in ("n_heldout", "n_train_synthetic", "val_fraction")})


def discriminator_eval_settings(config: dict, dataset: str) -> dict:
    disc = config["datasets"][dataset]["discrimination"]
    return canonical({k: disc[k] for k in ("eval_steps", "eval_restarts", "step_factor", "apgd")})


def score_settings(config: dict, dataset: str) -> dict:
    scores = config["datasets"][dataset]["scores"]
    return canonical({**{k: scores[k] for k in ("eps", "steps", "step_factor", "batch_size")},
                      "compute": compute_settings(config, dataset)})


def transfer_settings(config: dict, dataset: str) -> dict:
    """Adversarial training on one generator's synthetic images alone (transferred robustness):
    a single training set, so gamma is 1.0 as for the baseline."""
    ds = config["datasets"][dataset]
    ranking = ds["generator_ranking"]
    return canonical({**run_settings(ds, paths.BASELINE), "epochs": ranking["epochs"],
                      "arch": ds["training"]["architectures"][0], "threat": ds["threats"][ranking["threat"]]})


def ranked_generators(config: dict, dataset: str) -> list[str]:
    return config["datasets"][dataset]["generator_ranking"]["generators"]


def check_discrimination(config: dict, dataset: str) -> None:
    """Ranked generators have images of their own, threats exist, the eps grid increases and the
    evaluation attack is no weaker than the training one."""
    ds, where = config["datasets"][dataset], f"datasets.{dataset}"
    for generator in ds["generator_ranking"]["generators"]:
        if generator not in ds["generators"]:
            raise ConfigError(f"{where}.generator_ranking.generators: '{generator}' is not a key of {where}.generators")
        if is_mixture(config, dataset, generator):
            raise ConfigError(f"{where}.generator_ranking.generators: '{generator}' is a mixture: it has no images of "
                              f"its own to discriminate (rank its members)")
    for block in ("generator_ranking", "score_groups"):
        if ds[block]["threat"] not in ds["threats"]:
            raise ConfigError(f"{where}.{block}.threat: '{ds[block]['threat']}' is not a key of {where}.threats")
    disc = ds["discrimination"]
    if disc["eps"] != sorted(set(disc["eps"])):
        raise ConfigError(f"{where}.discrimination.eps: must be increasing without repeats, got {disc['eps']}")
    if disc["eval_steps"] < disc["steps"]:  # same step_factor: fewer steps is a weaker attack
        raise ConfigError(f"{where}.discrimination.eval_steps: evaluation PGD ({disc['eval_steps']} steps) must "
                          f"not be weaker than training PGD ({disc['steps']} steps)")
