"""Files named in config (npz sets, labeler checkpoints, local generator models), checked when the workflow starts.

Snakemake deletes a job's old outputs before it runs the job, so a bad file found inside the
job would cost the last good result. These checks read headers only (npz array headers, a
checkpoint's spec) and run in the Snakefile before any job: existence, kind, readable
header, image geometry against the dataset's, and a checkpoint's architecture and classes.
Each error names the config key and the file.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .artifacts import MODEL_DIRECTORY_MARKER, ArtifactError
from .config import NUM_CLASSES, generator_files, labeler_checkpoint, source_files
from .data import IMAGE_SHAPES, check_same_geometry, npz_image_shape
from .presampled import PresampledSet


def check_named_files(config: dict) -> None:
    """Raise ArtifactError (config key, file, what is wrong) for the first bad file named in config."""
    for dataset, ds in config["datasets"].items():
        where = f"datasets.{dataset}"
        reference, geometry = _source_geometry(config, dataset)
        for name, gen in ds["generators"].items():
            files = generator_files(config, dataset, name)
            if gen["kind"] == "npz":
                with _named(f"{where}.generators.{name}.path"):
                    for path in files:
                        _file(path, "an npz or .npy")
                    shape = PresampledSet.open(gen["path"], gen.get("image_key", "image"),
                                               gen.get("label_key")).image_shape
                    if geometry is not None:
                        check_same_geometry(reference, geometry, files[0], shape)
            elif files:
                with _named(f"{where}.generators.{name}.model"):
                    _check_model(files[0], gen["kind"])
        num_classes = ds["source"].get("num_classes") or NUM_CLASSES.get(ds["source"]["kind"])
        for slot, settings in ds["labelers"].items():
            path = labeler_checkpoint(config, dataset, slot)
            if path:
                with _named(f"{where}.labelers.{slot}.checkpoint"):
                    from .models import check_spec, checkpoint_spec  # torch: only when a checkpoint is named

                    _, spec = checkpoint_spec(_file(path, "a checkpoint"))
                    check_spec(spec, path, settings["arch"], num_classes, geometry, reference)


def _source_geometry(config: dict, dataset: str) -> tuple[str, tuple | None]:
    """What the dataset's images are (a name for messages, H x W x C), from npz headers or the built-in table."""
    source = config["datasets"][dataset]["source"]
    files = source_files(config, dataset)
    if not files:
        return f"datasets.{dataset}.source ({source['kind']})", IMAGE_SHAPES.get(source["kind"])
    shapes = {}
    for split, path in files.items():
        with _named(f"datasets.{dataset}.source.{split}"):
            shapes[split] = npz_image_shape(_file(path, "an npz"), source.get("image_key", "image"),
                                            source.get("label_key", "label"))
            if len(shapes[split]) != 4 or shapes[split][-1] not in (1, 3):
                raise ArtifactError(f"{path}: images must be (N, H, W, C) with C in (1, 3), got {shapes[split]}")
    with _named(f"datasets.{dataset}.source"):
        check_same_geometry(files["train"], shapes["train"], files["test"], shapes["test"])
    return files["train"], tuple(shapes["train"][1:])


def _check_model(path: str, kind: str) -> None:
    """A local generator model: a save_pretrained directory (diffusers) or a network pickle file (stylegan)."""
    if kind == "diffusers" and not (Path(path) / MODEL_DIRECTORY_MARKER).is_file():
        raise ArtifactError(f"{path}: not a diffusers model directory (no {MODEL_DIRECTORY_MARKER})")
    if kind == "stylegan":
        _file(path, "a network pickle")


def _file(path: str, kind: str) -> str:
    """`path`, if it is a file; `kind` names what was expected ("an npz")."""
    if Path(path).is_dir():
        raise ArtifactError(f"{path}: is a directory, expected {kind} file")
    if not Path(path).is_file():
        raise ArtifactError(f"{path}: file not found")
    return path


@contextlib.contextmanager
def _named(key: str):
    """Prefix an ArtifactError raised inside the block with the config key that named the file."""
    try:
        yield
    except ArtifactError as err:
        raise ArtifactError(f"{key}: {err}") from err
