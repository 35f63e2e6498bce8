"""The `generators`, `diffusion_models` and `gan_models` blocks: what each sampling shard
needs, where a generator's model comes from, and mixtures of generators."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from .. import paths
from ..errors import ConfigError
from .data import num_classes
from .schema import canonical, schema_defaults


# Defaults of generator keys that only one kind reads: the schema's block for that kind, not the
# `generator` block's, so that they do not change (and rerun) the other kinds' sampling settings.
KIND_DEFAULTS = {"stylegan": schema_defaults("stylegan_generator")}


CONDITIONAL_KINDS = ("gan", "stylegan", "npz")  # kinds whose shards may carry the generator's labels


# What port.generators.import_npz_shard reads of an npz generator's block (plus num_classes).
NPZ_IMPORT_KEYS = ("kind", "path", "image_key", "label_key", "n_images", "n_shards")


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")  # `google/ddpm-cifar10-32`: one slash at most


def is_url(model: str) -> bool:
    return urlparse(str(model)).scheme in ("http", "https")


def is_mixture(config: dict, dataset: str, generator: str) -> bool:
    return config["datasets"][dataset]["generators"][generator]["kind"] == "mixture"


def mixture_members(config: dict, dataset: str, mixture: str) -> list[str]:
    return list(config["datasets"][dataset]["generators"][mixture]["of"])


def mixture_fractions(config: dict, dataset: str, mixture: str) -> dict | None:
    """Each member's fraction of the selected images; None under `weights: arc` (from ARC at run time)."""
    gen = config["datasets"][dataset]["generators"][mixture]
    return None if gen.get("weights") == "arc" else canonical(dict(gen["of"]))


def selected_path(config: dict, dataset: str, generator: str, selection: str) -> str:
    """The selected images of a generator, or of a mixture (its members' images merged)."""
    if is_mixture(config, dataset, generator):
        return paths.MIXTURE_SELECTED.format(dataset=dataset, mixture=generator, selection=selection)
    return paths.SELECTED.format(dataset=dataset, generator=generator, selection=selection)


def pipeline_model_pattern(config: dict, dataset: str, generator: str) -> str | None:
    """The paths pattern (`{dataset}` left open) of the model a generator samples from when the
    pipeline trains it (a DDPM directory or a GAN checkpoint); None for hub ids, outside
    directories and npz sets."""
    ds = config["datasets"][dataset]
    gen = ds["generators"][generator]
    model = gen.get("model")
    if gen["kind"] == "diffusers" and model in ds.get("diffusion_models", {}):
        return paths.fill(paths.DIFFUSION_MODEL, model=model)
    if gen["kind"] == "gan":
        return paths.fill(paths.GAN_MODEL, model=model)
    return None


def pipeline_model(config: dict, dataset: str, generator: str) -> str | None:
    """pipeline_model_pattern's path for the dataset."""
    pattern = pipeline_model_pattern(config, dataset, generator)
    return None if pattern is None else pattern.format(dataset=dataset)


def remote_model(config: dict, dataset: str, generator: str) -> str | None:
    """The hub id (kind diffusers) or URL (kind stylegan) a generator's model is fetched from by
    the local rule fetch_model; None for a model on disk, a pipeline-trained one, or npz sets."""
    gen = config["datasets"][dataset]["generators"][generator]
    model = gen.get("model")
    if not model or pipeline_model(config, dataset, generator) is not None or os.path.exists(model):
        return None
    if gen["kind"] == "stylegan" and is_url(model):
        return model
    if gen["kind"] == "diffusers" and HUB_ID.fullmatch(model):
        return model
    return None


def fetched_source(folder: str, model: str) -> str:
    """What a shard reads from a fetched folder: a URL's network pickle, or the hub snapshot itself."""
    return f"{folder}/network.pkl" if is_url(model) else folder


def generator_files(config: dict, dataset: str, generator: str) -> list[str]:
    """What a generator reads from outside the pipeline, by path: the parts of a pre-sampled npz
    set (npz files or .npy pairs), or a local `model` (a save_pretrained directory, a StyleGAN
    pickle); [] for hub ids, URLs and pipeline-trained models."""
    gen = config["datasets"][dataset]["generators"][generator]
    if gen["kind"] == "npz":
        parts = [gen["path"]] if isinstance(gen["path"], (str, dict)) else gen["path"]
        return [path for part in parts for path in (part.values() if isinstance(part, dict) else [part])]
    model = gen.get("model")
    if gen["kind"] in ("diffusers", "stylegan") and pipeline_model(config, dataset, generator) is None \
            and model and os.path.exists(model):
        return [model]
    return []


def generator_settings(config: dict, dataset: str, generator: str) -> dict:
    """What a sampling shard needs: the generator's block with its kind's defaults, without the
    labelling choice (labels_from reaches the pseudo-label stage, not the sampler). An imported
    npz set gets only what its import reads: a sampler's keys (batch_size, steps, ...) cannot
    change its images, so editing them reruns nothing."""
    ds = config["datasets"][dataset]
    gen = ds["generators"][generator]
    settings = {**KIND_DEFAULTS.get(gen["kind"], {}), **gen}
    settings.pop("labels_from", None)
    if gen["kind"] == "npz":  # imported labels are checked against the dataset's classes
        settings = {key: value for key, value in settings.items() if key in NPZ_IMPORT_KEYS}
        settings["num_classes"] = num_classes(config, dataset)
    return canonical(settings)


def _check_mixture(ds: dict, name: str, gen: dict, at: str) -> None:
    """A mixture names two or more generators that sample images (no mixture of mixtures), with
    fractions summing to 1, or `weights: arc` and its members listed."""
    members = gen.get("of")
    if not members or len(members) < 2:
        raise ConfigError(f"{at}: kind mixture needs `of`, two or more generators")
    for member in members:
        if member not in ds["generators"]:
            raise ConfigError(f"{at}.of: '{member}' is not a key of generators")
        if ds["generators"][member]["kind"] == "mixture":
            raise ConfigError(f"{at}.of: '{member}' is a mixture itself; list its members instead")
    extra = sorted(set(gen) - {"kind", "of", "weights"} - set(schema_defaults("generator")))  # the schema fills those
    if extra:
        raise ConfigError(f"{at}: {', '.join(extra)} do not apply to kind mixture (it samples nothing)")
    if gen.get("weights") == "arc":
        if isinstance(members, dict):
            raise ConfigError(f"{at}: with `weights: arc` list the members (`of: [a, b]`); ARC gives the fractions")
        missing = [m for m in members if m not in ds["generator_ranking"]["generators"]]
        if missing:
            raise ConfigError(f"{at}: weights arc needs each member's ARC; add {missing} to "
                              f"generator_ranking.generators")
    elif not isinstance(members, dict):
        raise ConfigError(f"{at}.of: give each member's fraction of the selected images ({{a: 0.6, b: 0.4}}) "
                          f"or set `weights: arc`")
    elif not math.isclose(sum(members.values()), 1.0, abs_tol=1e-6):
        raise ConfigError(f"{at}.of: fractions sum to {sum(members.values()):g}, not 1")


def check_generators(config: dict, dataset: str) -> None:
    """Each generator names what its kind samples from; mixtures name generators that sample."""
    ds, where = config["datasets"][dataset], f"datasets.{dataset}"
    for name, gen in ds["generators"].items():
        at = f"{where}.generators.{name}"
        if gen["kind"] == "mixture":
            _check_mixture(ds, name, gen, at)
        else:
            _check_sampler(config, dataset, name, at)
    for model_name, model in ds.get("diffusion_models", {}).items():
        levels = model.get("attention_levels", [])
        if any(level >= len(model["block_out_channels"]) for level in levels):
            raise ConfigError(f"{where}.diffusion_models.{model_name}.attention_levels: "
                              f"levels must be below {len(model['block_out_channels'])}")


def _check_sampler(config: dict, dataset: str, name: str, at: str) -> None:
    """A generator that samples (or imports) images: its kind's keys, and labels it can give."""
    ds = config["datasets"][dataset]
    gen, where = ds["generators"][name], f"datasets.{dataset}"
    if re.fullmatch(paths.NAME, name) is None:
        raise ConfigError(f"{at}: only a kind mixture may have '+' in its name (its files are named by it)")
    if "of" in gen or "weights" in gen:
        raise ConfigError(f"{at}: `of` and `weights` only apply to kind mixture")
    if gen["kind"] == "diffusers":
        for key in ("model", "n_images"):
            if key not in gen:
                raise ConfigError(f"{at}: kind diffusers needs `{key}`")
        if gen["n_shards"] > gen["n_images"]:
            raise ConfigError(f"{at}: n_shards ({gen['n_shards']}) exceeds n_images ({gen['n_images']})")
    elif gen["kind"] == "gan":
        if gen.get("model") not in ds.get("gan_models", {}) or "n_images" not in gen:
            raise ConfigError(f"{at}: kind gan needs `n_images` and a `model` that is a key of {where}.gan_models")
    elif gen["kind"] == "stylegan":
        for key in ("model", "n_images"):
            if key not in gen:
                raise ConfigError(f"{at}: kind stylegan needs `{key}` (an official network pickle)")
    elif not gen.get("path"):
        raise ConfigError(f"{at}: kind npz needs `path`")
    other_kind = [key for kind, defaults in KIND_DEFAULTS.items() if kind != gen["kind"]
                  for key in defaults if key in gen]
    if other_kind:
        raise ConfigError(f"{at}: {', '.join(other_kind)} only apply to kind stylegan")
    conditional_ddpm = ds.get("diffusion_models", {}).get(gen.get("model"), {}).get("class_conditional")
    # a local save_pretrained DDPM: its classes are read from its UNet config before any job (port.inputs)
    local_ddpm = gen["kind"] == "diffusers" and generator_files(config, dataset, name)
    if gen.get("labels_from") == "generator" and not (gen["kind"] in CONDITIONAL_KINDS or conditional_ddpm
                                                       or local_ddpm):
        raise ConfigError(f"{at}: labels_from generator needs a generator that records labels (kinds "
                          f"{', '.join(CONDITIONAL_KINDS)}, a class_conditional diffusion_models entry, "
                          f"or a local save_pretrained directory)")
    if gen.get("labels_from") == "generator" and gen.get("guidance_scale") == 0:
        # the guided noise is the unconditional model's alone: image i is no image of class i mod C
        raise ConfigError(f"{at}.guidance_scale: 0 samples without the class, so labels_from generator "
                          f"would label images with classes they were not drawn from")


def counted_from_config(config: dict, dataset: str, generator: str) -> bool:
    """An imported set whose files are not all on disk yet, with the `n_images` it imports: the plan
    counts that many images (the import takes at most n_images), so a cluster run can be planned
    before its 20M images are copied in."""
    gen = config["datasets"][dataset]["generators"][generator]
    return gen["kind"] == "npz" and bool(gen.get("n_images")) \
        and not all(Path(f).is_file() for f in generator_files(config, dataset, generator))
