"""What a dataset's run will cost before any job runs (`results/{dataset}/plan.csv`).

The jobs are the workflow's own DAG for the dataset's default targets, built by Snakemake itself
(every job forced, nothing run), and each job's work comes from the `params` its rule hands the
job: the same functions of the config the jobs use, so the plan cannot drift from the DAG. Rates
are the benchmark JSON files of one folder of bench/results/ (one device); a stage whose work the
folder has no measured rate for gets no hours and a note saying so, never a guessed number.

The module imports no torch (the plan job runs on the submitting host) and, at import, nothing
heavy: the Snakefile imports it for `rate_files`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .errors import ConfigError
from .settings.data import validation_count
from .settings.generation import counted_from_config, generator_files
from .settings.targets import final_targets
from .settings.training import TrainSettings

REPO = Path(__file__).resolve().parents[2]  # the package is installed editable: the checkout
SNAKEFILE = REPO / "Snakefile"
BENCH = REPO / paths.BENCH_RESULTS
# Split sizes of the built-in datasets (torchvision's CIFAR releases, scikit-learn's 1,797 digits).
BUILTIN_SIZES = {"cifar10": (50000, 10000), "cifar100": (50000, 10000), "digits": (1797, None)}
PLAN_COLUMNS = ["rule", "part", "jobs", "work", "work_unit", "gpu_hours", "cpu_hours", "disk_gb", "rate", "rate_unit",
                "rate_file", "note"]


# ---- rates: the benchmark JSON files of one device -------------------------------------------------
@dataclass(frozen=True)
class Rate:
    per_second: float
    unit: str
    file: str  # the JSON file the rate comes from


@dataclass
class RateBook:
    """The benchmark results of one bench/results/ folder, by file stem (`pgd_training`, ...)."""

    folder: Path
    results: dict = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path) -> "RateBook":
        folder = Path(folder)
        results = {}
        for path in sorted(folder.glob("*.json")):
            try:
                results[path.stem] = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}: not a benchmark JSON file ({err})") from err
        return cls(folder, results)

    def file(self, stem: str) -> str:
        """A benchmark file's name as the plan records it: relative to the repository."""
        path = self.folder / f"{stem}.json"
        return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)

    def find(self, stem: str, settings_match: dict, arch: str) -> tuple[Rate | None, str]:
        """The result row of benchmark `stem` for `arch`, if the benchmark's settings agree with
        `settings_match`; else None and why not."""
        data = self.results.get(stem)
        path = self.file(stem)
        if data is None:
            return None, f"no measured rate: {path} is missing"
        for key, wanted in settings_match.items():
            measured = data["settings"].get(key)
            if measured != wanted:
                return None, f"no measured rate: {path} measured {key} {measured}, the stage runs {wanted}"
        for row in data["results"]:
            if row.get("arch") == arch:
                return Rate(float(row["rate"]), row["unit"], path), ""
        return None, f"no measured rate: {path} has no result for arch {arch}"


def device_folders(bench_results: str | Path = BENCH) -> dict[str, str]:
    """GPU benchmark folders of bench/results/ by name, with the date of their newest result."""
    found = {}
    for folder in sorted(p for p in Path(bench_results).glob("*") if p.is_dir()):
        environments = [json.loads(path.read_text()).get("environment", {}) for path in folder.glob("*.json")]
        dates = [env["date"] for env in environments if env.get("device_type") == "cuda"]
        if dates:
            found[folder.name] = max(dates)
    return found


def device_folder(device: str | None, bench_results: str | Path = BENCH) -> Path:
    """The folder of `plan.device`, or of the newest GPU results present when it is null."""
    folders = device_folders(bench_results)
    if device is None:
        if not folders:
            raise ConfigError(f"plan.device: no GPU benchmark results under {bench_results}/ (run bench/gpu_suite.sh)")
        device = max(folders, key=folders.get)
    if device not in folders:
        raise ConfigError(f"plan.device: '{device}' is not a folder of GPU results under {bench_results}/ "
                          f"(present: {', '.join(folders) or 'none'})")
    return Path(bench_results) / device


def imported_sets(config: dict, dataset: str) -> list[str]:
    """The npz files of the dataset's imported generators: the plan counts their images. A set
    with `n_images` is counted from it until its files are on disk (see _generator_images)."""
    generators = config["datasets"][dataset]["generators"]
    return [path for name, gen in generators.items()
            if gen["kind"] == "npz" and not counted_from_config(config, dataset, name)
            for path in generator_files(config, dataset, name)]


def rate_files(device: str | None) -> list[str]:
    return sorted(str(p) for p in device_folder(device).glob("*.json"))


# ---- the dataset's size facts --------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetFacts:
    """What the work of a stage depends on besides its params: split sizes and image geometry."""

    n_train: int
    n_test: int
    image_shape: tuple  # H, W, C
    generator_images: dict  # generator -> images it samples (or imports)

    @property
    def image_bytes(self) -> int:
        return math.prod(self.image_shape)


def dataset_facts(config: dict, dataset: str) -> DatasetFacts:
    from .inputs import source_geometry

    ds = config["datasets"][dataset]
    source = ds["source"]
    _, shape = source_geometry(config, dataset)
    if source["kind"] == "npz":
        from .data import npz_image_shape

        n_train, n_test = (npz_image_shape(source[split], source.get("image_key", "image"),
                                           source.get("label_key", "label"))[0] for split in ("train", "test"))
    elif source["kind"] == "digits":
        total = BUILTIN_SIZES["digits"][0]
        n_test = math.ceil(total * source["test_fraction"])  # scikit-learn's train_test_split rounds test up
        n_train = total - n_test
    else:
        n_train, n_test = BUILTIN_SIZES[source["kind"]]
    images = {name: _generator_images(config, dataset, name) for name, gen in ds["generators"].items()
              if gen["kind"] != "mixture"}  # a mixture samples nothing: its members' images are counted
    return DatasetFacts(n_train, n_test, tuple(shape), images)


def _generator_images(config: dict, dataset: str, generator: str) -> int:
    gen = config["datasets"][dataset]["generators"][generator]
    if gen["kind"] != "npz" or counted_from_config(config, dataset, generator):
        return gen["n_images"]
    from .errors import ArtifactError
    from .presampled import PresampledSet

    try:  # the count is the imported set's: its files must be on disk, or n_images set
        held = len(PresampledSet.open(gen["path"], gen.get("image_key", "image"), gen.get("label_key")))
    except ArtifactError as err:
        raise ArtifactError(f"datasets.{dataset}.generators.{generator}.path: {err} (the plan counts the "
                            f"imported set's images: put its files in place first, or set its n_images)") from err
    return min(gen.get("n_images") or held, held)  # the import takes at most n_images


# ---- work per job ----------------------------------------------------------------------------
@dataclass
class Estimate:
    work: float | None = None
    unit: str = ""
    seconds: float | None = None
    rate: Rate | None = None
    note: str = ""
    disk_bytes: float | None = None


def _passes_rate(rates: RateBook, settings: dict, facts: DatasetFacts, stem: str = "pgd_training"):
    """Forward-backward passes per second of `settings['arch']`, from a PGD-k training benchmark:
    a PGD-k step costs k + 1 passes of every image (k attack steps and the weight update's)."""
    compute = settings.get("compute", {})
    stems = stem
    if compute.get("compile"):
        stems = f"{stem}-compile-{compute.get('compile_mode') or 'default'}"
    match = {"image_size": facts.image_shape[0], "precision": compute.get("precision", "bf16")}
    rate, note = rates.find(stems, match, settings["arch"])
    if rate is None:
        return None, note
    bench_steps = rates.results[stems]["settings"]["threat"]["steps"]
    return Rate(rate.per_second * (bench_steps + 1), "image passes/s", rate.file), ""


def _training(settings: dict, n_real: int, rates: RateBook, facts: DatasetFacts, synthetic: bool) -> Estimate:
    """Image passes of one training run: epochs x steps per epoch (one pass over the real images
    left after validation) x images per step (real + synthetic) x passes per image: the attack's
    steps and the update's (PGD-k: k + 1), one more for TRADES' clean pass, and for stability
    training (smoothing) a clean and a noisy pass."""
    trainer = TrainSettings.from_dict({k: v for k, v in settings.items() if k in TrainSettings.__dataclass_fields__})
    full = dataclasses.asdict(trainer)
    n_fit = n_real - validation_count(n_real, full["val_fraction"])
    steps = full["epochs"] * (n_fit // full["batch_size"])
    per_step = full["batch_size"] + (trainer.synthetic_batch_size if synthetic else 0)
    passes_per_image = (full.get("threat") or {}).get("steps", 0) + 1 + (full.get("loss") == "trades") \
        + bool(full.get("smoothing"))
    passes = steps * per_step * passes_per_image
    rate, note = _passes_rate(rates, full, facts)
    return Estimate(passes, "image passes", passes / rate.per_second if rate else None, rate, note)


def _sample_shard(job, rates, facts, config):
    from .shards import shard_bounds

    s = job["params"]["settings"]
    n_images = facts.generator_images[job["wildcards"]["generator"]]
    start, stop = shard_bounds(n_images, s.get("n_shards", 1), int(job["wildcards"]["shard"]))
    images = stop - start
    disk = images * facts.image_bytes
    if s["kind"] != "diffusers":
        counted = ("; counted from n_images: the files are not on disk yet"
                   if counted_from_config(config, job["wildcards"]["dataset"], job["wildcards"]["generator"]) else "")
        return Estimate(images, "images", note=f"no measured rate: no benchmark samples kind {s['kind']}{counted}",
                        disk_bytes=disk)
    evaluations = images * s["steps"] * (2 if s.get("guidance_scale") else 1)  # guidance: two UNet calls
    unet = rates.results.get("sampling", {}).get("settings", {}).get("unet", {})
    if (unet.get("sample_size"), unet.get("in_channels")) != (facts.image_shape[0], facts.image_shape[2]):
        return Estimate(evaluations, "UNet evaluations", disk_bytes=disk,
                        note=f"no measured rate: {rates.file('sampling')} measured a "
                             f"{unet.get('sample_size')}px UNet, not {facts.image_shape[0]}px")
    scheduler = s["scheduler"]
    rows = [r for r in rates.results["sampling"]["results"] if r["what"].startswith(f"{scheduler} ")
            and ("unet_evaluations_per_s" in r or r["unit"] == "UNet evaluations/s")]
    rows.sort(key=lambda r: r.get("steps") != s["steps"])  # the same step count first
    if not rows:
        return Estimate(evaluations, "UNet evaluations", disk_bytes=disk,
                        note=f"no measured rate: {rates.file('sampling')} has no {scheduler} sampler")
    per_second = rows[0].get("unet_evaluations_per_s", rows[0]["rate"])
    rate = Rate(per_second, "UNet evaluations/s", rates.file("sampling"))
    return Estimate(evaluations, "UNet evaluations", evaluations / per_second, rate, disk_bytes=disk)


def _train_robust(job, rates, facts, config):
    synthetic = paths.selection_of(job["wildcards"]["method"]) is not None
    return _training(job["params"]["settings"], facts.n_train, rates, facts, synthetic)


def _train_recipe(job, rates, facts, config):
    from .settings.studies import variant

    synthetic = variant(config, job["wildcards"]["dataset"], job["wildcards"]["variant"])["synthetic"]
    return _training(job["params"]["settings"], facts.n_train, rates, facts, synthetic)


def _train_labeler(job, rates, facts, config):
    return _training({**job["params"]["settings"], "threat": None}, facts.n_train, rates, facts, False)


def _train_discriminator(job, rates, facts, config):
    """Real-vs-synthetic batches: the real training set against as many synthetic images per step."""
    return _training(job["params"]["settings"], facts.n_train, rates, facts, True)


def _train_transfer(job, rates, facts, config):
    """Synthetic images alone: the transfer set (generator_ranking.n_train) is the training set."""
    ds = config["datasets"][job["wildcards"]["dataset"]]
    n_train = ds["generator_ranking"]["n_train"] or facts.generator_images[job["wildcards"]["generator"]]
    return _training(job["params"]["settings"], n_train, rates, facts, False)


def _score_shard(job, rates, facts, config):
    from .shards import shard_bounds

    s = job["params"]["settings"]
    generator = job["wildcards"]["generator"]
    start, stop = shard_bounds(facts.generator_images[generator], job["params"]["n_shards"],
                               int(job["wildcards"]["shard"]))
    disc = config["datasets"][job["wildcards"]["dataset"]]["discrimination"]
    match = {"image_size": facts.image_shape[0], "steps": s["steps"],
             "precision": s.get("compute", {}).get("precision", "bf16")}
    rate, note = rates.find("scoring", match, disc["arch"])
    images = stop - start
    return Estimate(images, "images scored", images / rate.per_second if rate else None, rate, note)


def _autoattack(settings: dict, arch: str, rates, facts) -> Estimate:
    if not settings.get("autoattack"):
        return Estimate(0, "AutoAttack images", 0.0, note="AutoAttack off; PGD evaluation has no benchmark")
    images = settings.get("n_test") or facts.n_test
    rate, note = rates.find("autoattack", {"image_size": facts.image_shape[0]}, arch)
    version = (rates.results.get("autoattack", {}).get("settings", {}).get("version"))
    note = note or (f"the rate of AutoAttack {version}; the PGD-{settings.get('pgd_steps')} evaluation has no benchmark"
                    + (f" (runs {', '.join(settings['autoattack_attacks'])})" if settings.get("autoattack_attacks")
                       else ""))
    return Estimate(images, "AutoAttack images", images / rate.per_second if rate else None, rate, note)


def _evaluate(job, rates, facts, config):
    return _autoattack(job["params"]["settings"], job["wildcards"]["arch"], rates, facts)


def _certify(job, rates, facts, config):
    s = job["params"]["settings"]
    noisy = math.ceil(facts.n_test / s["skip"]) * (s["n0"] + s["n"])
    match = {"image_size": facts.image_shape[0], "sigma": s["sigma"]}
    precision = s.get("compute", {}).get("precision", "bf16")
    stem = "certification" if precision == "bf16" else f"certification-{precision}"
    rate, note = rates.find(stem, match, job["wildcards"]["arch"])
    return Estimate(noisy, "noisy images", noisy / rate.per_second if rate else None, rate, note)


def _merge_shards(job, rates, facts, config):
    images = facts.generator_images[job["wildcards"]["generator"]]
    return Estimate(images, "images", disk_bytes=images * facts.image_bytes,
                    note="no measured rate: no benchmark covers this rule")


WORK = {"sample_shard": _sample_shard, "merge_shards": _merge_shards, "train_robust": _train_robust, "train_smooth": _train_robust,
        "train_recipe": _train_recipe, "train_labeler": _train_labeler, "train_discriminator": _train_discriminator,
        "train_scorer": _train_discriminator, "train_nonrobust_discriminator": _train_discriminator,
        "train_transfer": _train_transfer, "train_filter_study": _train_transfer, "score_shard": _score_shard,
        "evaluate": _evaluate, "certify": _certify}


def estimate(job: dict, rates: RateBook, facts: DatasetFacts, config: dict) -> Estimate:
    """One job's work, hours and disk; a rule without a work model says so."""
    if job["rule"] not in WORK:
        return Estimate(note="no measured rate: no benchmark covers this rule")
    return WORK[job["rule"]](job, rates, facts, config)


# ---- the DAG and the table ---------------------------------------------------------------------
def dag_jobs(config: dict, dataset: str, workdir: str | Path = ".") -> list[dict]:
    """Every job of the dataset's default targets as Snakemake builds the DAG (all forced, none
    run): rule, wildcards, params and GPUs."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                          ResourceSettings, StorageSettings)

    from .inputs import planning

    targets = final_targets(config, [dataset])
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api, planning():
        workflow_api = api.workflow(resource_settings=ResourceSettings(), config_settings=ConfigSettings(config=config),
                                    storage_settings=StorageSettings(), snakefile=SNAKEFILE, workdir=Path(workdir))
        workflow_api.dag(dag_settings=DAGSettings(targets=set(targets), forceall=True))
        workflow = workflow_api._workflow  # the API offers no job listing; a dry run's DAG, never executed
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        return [{"rule": job.rule.name, "wildcards": dict(job.wildcards_dict), "params": dict(job.params.items()),
                 "gpus": int(job.resources.get("gpu", 0) or 0)} for job in workflow.dag.jobs]


def plan_table(jobs: list[dict], rates: RateBook, facts: DatasetFacts, config: dict):
    """One row per rule and part (its generator or architecture: what its rate depends on), in
    DAG order, and a total: jobs, work, hours, disk, the rate and its file, and a note."""
    import pandas as pd

    rows: dict[tuple, dict] = {}
    for job in jobs:
        est = estimate(job, rates, facts, config)
        wildcards = job["wildcards"]
        part = wildcards.get("generator") or wildcards.get("arch") or wildcards.get("slot") or ""
        row = rows.setdefault((job["rule"], part), {
            "rule": job["rule"], "part": part, "jobs": 0, "work": 0.0, "work_unit": est.unit, "gpu": job["gpus"] > 0,
            "hours": 0.0, "disk": None, "rates": set(), "units": set(), "files": set(), "notes": set()})
        row["jobs"] += 1
        row["work"] = None if est.work is None or row["work"] is None else row["work"] + est.work
        row["hours"] = None if est.seconds is None or row["hours"] is None else \
            row["hours"] + est.seconds * max(job["gpus"], 1) / 3600.0
        if est.disk_bytes is not None:
            row["disk"] = (row["disk"] or 0.0) + est.disk_bytes
        if est.rate:
            row["rates"].add(f"{est.rate.per_second:.6g}")
            row["units"].add(est.rate.unit)
            row["files"].add(est.rate.file)
        if est.note:
            row["notes"].add(est.note)
    table = [{"rule": row["rule"], "part": row["part"], "jobs": row["jobs"], "work": row["work"],
              "work_unit": row["work_unit"], "gpu_hours": row["hours"] if row["gpu"] else None,
              "cpu_hours": None if row["gpu"] else row["hours"],
              "disk_gb": None if row["disk"] is None else row["disk"] / 1e9,
              "rate": ";".join(sorted(row["rates"])) or None, "rate_unit": ";".join(sorted(row["units"])) or None,
              "rate_file": ";".join(sorted(row["files"])) or None, "note": "; ".join(sorted(row["notes"]))}
             for row in rows.values()]
    frame = pd.DataFrame(table, columns=PLAN_COLUMNS)
    unrated = frame[frame["gpu_hours"].isna() & frame["cpu_hours"].isna()]
    names = sorted({f"{r}" + (f" ({p})" if p else "") for r, p in zip(unrated["rule"], unrated["part"])})
    total = {"rule": "total", "part": "", "jobs": int(frame["jobs"].sum()), "work": None, "work_unit": "",
             "gpu_hours": frame["gpu_hours"].sum(min_count=1), "cpu_hours": frame["cpu_hours"].sum(min_count=1),
             "disk_gb": frame["disk_gb"].sum(min_count=1), "rate": None, "rate_unit": None, "rate_file": None,
             "note": f"excludes {len(names)} rows without a measured rate: {', '.join(names)}" if names else ""}
    return pd.concat([frame, pd.DataFrame([total], columns=PLAN_COLUMNS)], ignore_index=True)


def write_plan(*, config: dict, dataset: str, device: str | None, out_csv):
    """Build the dataset's DAG, estimate every job and write the plan table."""
    from .artifacts import write_csv

    rates = RateBook.load(device_folder(device))
    facts = dataset_facts(config, dataset)
    table = plan_table(dag_jobs(config, dataset), rates, facts, config)
    write_csv(table, out_csv)
    return table


def markdown(table) -> str:
    """The plan as a Markdown table (hours to one decimal), for docs and closing notes."""
    columns = ["rule", "part", "jobs", "work", "work_unit", "gpu_hours", "cpu_hours", "disk_gb", "note"]

    def cell(column, value):
        if value is None or value != value:  # None or NaN
            return ""
        if column == "work":
            return f"{value:.3g}"
        if column in ("gpu_hours", "cpu_hours", "disk_gb"):
            return f"{value:.1f}"
        return re.sub(r"\s+", " ", str(value)).replace("|", "/")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, row[c]) for c in columns) + " |" for row in table.to_dict("records")]
    return "\n".join(lines)
