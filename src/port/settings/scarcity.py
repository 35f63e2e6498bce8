"""The data-scarcity study (`studies.data_scarcity`, rules/scarcity.smk): the real training
set cut to n_real images, and every stage that depends on it rerun on the cut."""

from __future__ import annotations

from .. import paths
from ..errors import ConfigError
from .discrimination import discriminator_settings
from .generation import pipeline_model_pattern
from .labeling import labeler_checkpoint, labeler_settings
from .schema import canonical
from .studies import study
from .training import run_row, run_settings, training_runs


def scarcity_sizes(config: dict, dataset: str) -> list[str]:
    """The study's n_real values as wildcards: each cut's size, then `all` (the whole training set)."""
    block = study(config, dataset, "data_scarcity")
    return [str(n) for n in block["sizes"]] + ([paths.ALL_IMAGES] if block["all"] else [])


def scarcity_runs(config: dict, dataset: str) -> list[dict]:
    """Wildcards of every run of the study: each n_real, the baseline and PORT on each selection,
    each training architecture and seed, at the study's threat."""
    block = study(config, dataset, "data_scarcity")
    if block["threat"] not in config["datasets"][dataset]["threats"]:
        raise ConfigError(f"datasets.{dataset}.studies.data_scarcity.threat: '{block['threat']}' is not a key of "
                          f"datasets.{dataset}.threats")
    return [{"dataset": dataset, "n_real": n_real, "threat": block["threat"], "method": method, "arch": arch,
             "seed": seed} for n_real in scarcity_sizes(config, dataset)
            for method, arch, seed in training_runs(config, dataset, seeds=block["seeds"])]


def scarcity_file(pattern: str, **values) -> str:
    """What a run of cut `values["n_real"]` reads for `pattern` (a path of the dataset's layout):
    the cut's own file, or for `all` the dataset's (the default run's training set, generator,
    labelers and selections: trained on all of it)."""
    return (pattern if values["n_real"] == paths.ALL_IMAGES else paths.scarce(pattern)).format(**values)


def scarcity_generator_model(config: dict, dataset: str, n_real: str) -> str:
    """The training generator's model trained on cut n_real; ConfigError when the pipeline does not
    train that generator (a hub id or an imported set cannot be retrained on a cut)."""
    generator = config["datasets"][dataset]["training"]["generator"]
    pattern = pipeline_model_pattern(config, dataset, generator)
    if pattern is None:
        raise ConfigError(f"datasets.{dataset}.studies.data_scarcity: the training generator '{generator}' is not "
                          f"trained by the pipeline (a diffusion_models or gan_models entry), so no cut can train it")
    return scarcity_file(pattern, dataset=dataset, n_real=n_real)


def scarcity_training_settings(config: dict, dataset: str, threat: str, method: str, arch: str) -> dict:
    """A run of the study: the training block at `threat`, `steps` optimizer steps at any n_real
    (epochs 1, raised by min_steps to whole epochs), and the last weights: model selection on a
    validation split of ten images (at n_real 100) would pick an epoch by noise."""
    ds = config["datasets"][dataset]
    return canonical({**run_settings(ds, method), "arch": arch, "epochs": 1, "model_selection": "last",
                      "min_steps": study(config, dataset, "data_scarcity")["steps"], "threat": ds["threats"][threat]})


def scarcity_labeler_settings(config: dict, dataset: str, slot: str) -> dict:
    """A cut's labeler: the dataset's, for at least the study's min_steps optimizer steps."""
    if labeler_checkpoint(config, dataset, slot):
        raise ConfigError(f"datasets.{dataset}.labelers.{slot}.checkpoint: a given labeler was not trained on a "
                          f"cut; the data-scarcity study trains its labelers")
    return canonical({**labeler_settings(config, dataset, slot),
                      "min_steps": study(config, dataset, "data_scarcity")["min_steps"]})


def scarcity_scorer_settings(config: dict, dataset: str) -> dict:
    """A cut's scorer (the adaptive selection's discriminator): the dataset's, for at least min_steps steps."""
    eps = config["datasets"][dataset]["scores"]["discriminator_eps"]
    return canonical({**discriminator_settings(config, dataset, eps),
                      "min_steps": study(config, dataset, "data_scarcity")["min_steps"]})


def scarcity_row(method: str, arch: str, seed: int, n_real: str) -> dict:
    """A run's identity columns and its cut (`all` or the cut's size: the n_real wildcard)."""
    return {**run_row(method, arch, seed), "cut": n_real}
