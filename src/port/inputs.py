"""Files named in config (npz sets, labeler checkpoints, local generator models), checked early.

Snakemake deletes a job's old outputs before it runs the job, so a bad file found inside the
job would cost the last good result. These checks run in the input functions of the rules that
read the files: while Snakemake builds the DAG, before any job, and only for the datasets the
run builds. Snakemake discards an input function's error when the job's outputs already exist,
so the Snakefile also runs them all when the workflow starts (`check_finished_datasets`) for
the requested datasets that hold results, with the batch of every trainer of an npz training
set. They read headers only (npz array headers, a checkpoint's spec, a network pickle's record,
a DDPM's UNet config) and an npz source's labels: existence, kind, readable header, image
geometry against the dataset's, labels and classes, a checkpoint's architecture and classes, a
local generator's classes. Each error names the config key and the file. The Snakefile imports
this module, so it loads h5py, numpy and torch only once the config names a file to check (DAG
parsing stays light).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
from pathlib import Path

from . import paths
from .settings.data import NUM_CLASSES, source_files
from .settings.generation import counted_from_config, generator_files
from .settings.labeling import labeler_checkpoint, labels_from
from .errors import ArtifactError, SettingsError

_planning = False  # true while port.plan lists a DAG's jobs (see planning)


@contextlib.contextmanager
def planning():
    """While the cost plan lists a DAG's jobs: an imported set that the plan counts from its
    `n_images` (its files not on disk yet) names no input, as the plan reads nothing a job reads."""
    global _planning
    _planning = True
    try:
        yield
    finally:
        _planning = False


def check_named_files(config: dict, dataset: str) -> None:
    """Every check the input functions of prepare_data, sample_shard and train_labeler run for a dataset."""
    ds = config["datasets"][dataset]
    source_inputs(config, dataset)
    for generator in ds["generators"]:
        generator_inputs(config, dataset, generator)
    for slot in ds["labelers"]:
        labeler_inputs(config, dataset, slot)


def requested_datasets(config: dict, argv: list[str], rule_inputs: dict) -> set[str]:
    """The datasets whose results a `snakemake` command line (`argv`, without the program) leads
    to: through its targets (files, or rule names whose input files `rule_inputs` gives; none: the
    default rule `all`). Every dataset when `argv` is not a snakemake command line (Snakemake run
    from Python); none for `--unlock`, which runs no job."""
    from snakemake.cli import get_argument_parser

    argv = list(argv)
    explicit = argv[argv.index("--") + 1:] if "--" in argv else []  # as snakemake.cli: targets after `--`
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage message is not ours to print
            args, _ = get_argument_parser().parse_known_args(argv[:len(argv) - len(explicit) - bool(explicit)])
    except (SystemExit, Exception):  # not a snakemake command line
        return set(config["datasets"])
    if args.unlock:
        return set()
    files = []
    for target in [*args.targets, *explicit] or ["all"]:
        files += rule_inputs.get(target, [target])
    prefix = paths.RESULTS.format(dataset="")
    relative = (Path(file).as_posix().removeprefix("./") for file in files)
    datasets = {file: file.removeprefix(prefix).split("/")[0] for file in relative if file.startswith(prefix)}
    # a plan reads the config-named files itself, in its own job, and trains on nothing
    return {name for file, name in datasets.items() if file != paths.PLAN.format(dataset=name)} & set(config["datasets"])


def check_finished_datasets(config: dict, argv: list[str], rule_inputs: dict) -> list[str]:
    """Check the config-named files of each dataset that the command line `argv` requests (see
    requested_datasets) and that already holds results, where an input function's error would be
    discarded (a dataset without results cannot hide one). Returns the datasets checked."""
    finished = [name for name in config["datasets"] if Path(paths.RESULTS.format(dataset=name)).is_dir()]
    checked = sorted(set(finished) & requested_datasets(config, argv, rule_inputs)) if finished else []
    for name in checked:
        check_named_files(config, name)
        check_trainer_batches(config, name)
    return checked


def source_inputs(config: dict, dataset: str) -> list[str]:
    """The npz files of a dataset's source (prepare_data's inputs), checked: files with the
    configured keys, train and test of one geometry."""
    files = source_files(config, dataset)
    if files:
        source_geometry(config, dataset)
        source_class_count(config, dataset)
    return list(files.values())


def check_batch_fits(config: dict, dataset: str, slot: str) -> None:
    """A labeler of an npz dataset needs one batch of the real training set after its validation
    hold-out; found when the run is planned, not inside the job (which would first cost the last
    good model)."""
    block = config["datasets"][dataset]["labelers"][slot]
    _check_batch(config, dataset, f"datasets.{dataset}.labelers.{slot}", block["batch_size"], block["val_fraction"])


def check_trainer_batches(config: dict, dataset: str) -> None:
    """The same for every trainer of the real training set (robust training, smoothing, the
    recipe, gamma and mixture study variants), when the workflow starts: the training job that
    finds it has lost its previous model already."""
    from .settings.training import real_set_batches

    val_fraction = config["datasets"][dataset]["training"]["val_fraction"]
    for key, batch_size in real_set_batches(config, dataset):
        _check_batch(config, dataset, key, batch_size, val_fraction)


def _check_batch(config: dict, dataset: str, key: str, batch_size: int, val_fraction: float) -> None:
    """`batch_size` (set at config `key`) must fit an npz source's training images after the
    `val_fraction` hold-out. A built-in dataset is left to the trainer's own check (its training
    set is larger than usual batches: 1,347 digits at the default split, 50,000 CIFAR images)."""
    source = config["datasets"][dataset]["source"]
    if not source_files(config, dataset):
        return
    from .settings.data import validation_count
    from .data import npz_image_shape  # h5py: only for an npz source

    with _named(f"datasets.{dataset}.source.train"):
        n = npz_image_shape(_file(source["train"], "an npz"), source.get("image_key", "image"))[0]
    left = n - validation_count(n, val_fraction)
    if left < batch_size:
        raise SettingsError(f"{key}.batch_size={batch_size}: {source['train']} holds {n} images, {left} after the "
                            f"val_fraction={val_fraction} hold-out: fewer than one batch")


def source_class_count(config: dict, dataset: str) -> int:
    """An npz source's classes, from its labels alone: labels within `num_classes`, and without
    it no test class that the training labels never show (what prepare_data would refuse)."""
    from .data import npz_class_count, npz_labels

    source = config["datasets"][dataset]["source"]
    labels = {}
    for split, path in source_files(config, dataset).items():
        with _named(f"datasets.{dataset}.source.{split}"):
            labels[split] = npz_labels(path, source.get("label_key", "label"), source.get("num_classes"))
    with _named(f"datasets.{dataset}.source"):
        return source.get("num_classes") or npz_class_count(dataset, source, labels["train"], labels["test"])


def generator_inputs(config: dict, dataset: str, generator: str) -> list[str]:
    """The files a generator reads from outside the pipeline (sample_shard's inputs), checked:
    npz parts with images of the dataset's geometry, or a local model of the right kind."""
    gen = config["datasets"][dataset]["generators"][generator]
    files = generator_files(config, dataset, generator)
    if _planning:
        if counted_from_config(config, dataset, generator):
            return []
    if files and gen["kind"] == "npz":
        from .data import check_same_geometry
        from .presampled import PresampledSet

        reference, geometry = source_geometry(config, dataset)
        with _named(f"datasets.{dataset}.generators.{generator}.path"):
            for path in files:
                _file(path, "an npz or .npy")
            shape = PresampledSet.open(gen["path"], gen.get("image_key", "image"), gen.get("label_key")).image_shape
            if geometry is not None:
                check_same_geometry(reference, geometry, files[0], shape)
    elif files:
        with _named(f"datasets.{dataset}.generators.{generator}.model"):
            _check_model(files[0], gen["kind"])
            if gen["kind"] == "stylegan":
                _check_stylegan(config, dataset, generator, files[0])
            elif gen["kind"] == "diffusers" and labels_from(config, dataset, generator) == "generator":
                _check_classes(config, dataset, files[0], _recorded_ddpm_classes(files[0]))
    return files


def _check_stylegan(config: dict, dataset: str, generator: str, path: str) -> None:
    """A local StyleGAN pickle must make the dataset's images and, under labels_from generator,
    its classes."""
    from .data import check_same_geometry

    stat = Path(path).stat()
    classes, shape = _recorded_stylegan(path, stat.st_mtime_ns, stat.st_size)
    reference, geometry = source_geometry(config, dataset)
    if geometry is not None:
        check_same_geometry(reference, geometry, path, shape)
    if labels_from(config, dataset, generator) == "generator":
        _check_classes(config, dataset, path, classes)


def _check_classes(config: dict, dataset: str, path: str, classes: int) -> None:
    """Under labels_from generator image i is labelled with the generator's class i mod C: a
    generator of another class count leaves the dataset's other classes without images."""

    wanted = dataset_classes(config, dataset)
    if classes != wanted:
        what = "an unconditional generator" if classes == 0 else f"a generator of {classes} classes"
        raise ArtifactError(f"{path}: {what}, but labels_from generator needs the dataset's {wanted} classes")


def _recorded_ddpm_classes(path: str) -> int:
    """The classes a save_pretrained DDPM samples (0: unconditional), from its UNet's config.json
    (no torch): its last class embedding is "no class" (see port.generators.Sampler)."""

    unet_config = Path(path) / "unet" / "config.json"
    try:
        embeds = json.loads(unet_config.read_text(encoding="utf-8")).get("num_class_embeds")
    except (OSError, ValueError, AttributeError) as err:  # AttributeError: JSON that is not an object
        raise ArtifactError(f"{unet_config}: not a readable UNet config ({type(err).__name__}: {err})") from None
    if embeds is not None and (isinstance(embeds, bool) or not isinstance(embeds, int)):
        raise ArtifactError(f"{unet_config}: num_class_embeds {embeds!r} is not a count")
    return max(embeds - 1, 0) if embeds else 0


@functools.lru_cache(maxsize=8)
def _recorded_stylegan(path: str, mtime_ns: int, size: int) -> tuple[int, tuple]:
    """recorded_output, read once per file version (the input function runs once per shard)."""
    from .stylegan import recorded_output  # torch: only when a local StyleGAN pickle is named

    return recorded_output(path)


def dataset_classes(config: dict, dataset: str) -> int:
    """The dataset's class count: `source.num_classes`, the built-in kind's, or an npz source's labels'."""
    source = config["datasets"][dataset]["source"]
    return source.get("num_classes") or NUM_CLASSES.get(source["kind"]) or source_class_count(config, dataset)


def labeler_inputs(config: dict, dataset: str, slot: str) -> list[str]:
    """The checkpoint a labeler slot takes instead of training (train_labeler's input), checked:
    a model.pt of this pipeline for the configured architecture, classes and image geometry, with
    weights that fit it; without one, the slot's batch against the training set."""
    path = labeler_checkpoint(config, dataset, slot)
    if not path:
        check_batch_fits(config, dataset, slot)
        return []
    ds = config["datasets"][dataset]
    num_classes = ds["source"].get("num_classes") or NUM_CLASSES.get(ds["source"]["kind"])
    reference, geometry = source_geometry(config, dataset)
    with _named(f"datasets.{dataset}.labelers.{slot}.checkpoint"):
        from .models import check_spec, checkpoint_spec, model_from_checkpoint  # torch: only when one is named

        checkpoint, spec = checkpoint_spec(_file(path, "a checkpoint"))
        check_spec(spec, path, ds["labelers"][slot]["arch"], num_classes, geometry, reference)
        model_from_checkpoint(checkpoint, spec, path)  # the right spec with weights of another network
    return [path]


def source_geometry(config: dict, dataset: str) -> tuple[str, tuple | None]:
    """What the dataset's images are (a name for messages, H x W x C), from npz headers or the built-in table."""
    from .data import IMAGE_SHAPES, check_same_geometry, npz_image_shape

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
    from .artifacts import MODEL_DIRECTORY_MARKER

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
