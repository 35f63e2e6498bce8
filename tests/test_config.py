"""The configuration: schema validation with defaults, and port.settings' cross-field checks."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from port.settings.discrimination import arc_curve_inputs, discriminator_settings, transfer_settings
from port.settings.schema import canonical
from port.settings.checks import check_config
from port.settings.evaluation import evaluation_settings
from port.settings.targets import final_targets
from port.settings.generation import generator_settings, pipeline_model
from port.settings.labeling import labeler_settings, labels_from
from port.settings.training import run_paths, run_row, seed_study_paths, training_settings
from port.settings.smoothing import smoothing_epochs, smoothing_settings
from port.errors import ConfigError
from port.paths import RUN_EVAL, RUN_MODEL, selection_of
from port.settings.schema import SCHEMA as SCHEMA_FILE

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(SCHEMA_FILE)


@pytest.fixture(scope="module")
def raw_config():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.fixture
def config(raw_config):
    """The shipped config, validated (defaults filled in)."""
    validated = copy.deepcopy(raw_config)
    validate(validated, SCHEMA)
    return validated


def test_shipped_config_validates_and_gets_defaults(raw_config, config):
    digits = config["datasets"]["digits"]
    training = digits["training"]
    assert "attack_batchnorm" not in raw_config["datasets"]["digits"]["training"]
    assert training["attack_batchnorm"] == "train"
    assert training["model_selection"] == "best"
    assert training["buffer_chunks"] == 16
    assert training["momentum"] == 0.9 and training["weight_decay"] == 5.0e-4
    assert digits["evaluation"]["pgd_step_factor"] == 2.5 and digits["evaluation"]["batch_size"] == 500
    assert digits["labelers"]["lanet"]["checkpoint"] is None
    assert digits["generators"]["ddpm"]["eta"] == 0.0
    assert digits["diffusion_models"]["ddpm"]["norm_num_groups"] == 8
    assert config["datasets"]["cifar10"]["diffusion_models"] == {}
    assert config["seed"] == 0
    # every dataset audits its synthetic sets and drops test near-duplicates before selection
    assert config["datasets"]["cifar10"]["audit"] == {"test_threshold": 0.05, "train_threshold": 0.05, "drop": True}
    # values given in the file win over defaults
    assert training["gamma"] == 0.4 and training["epochs"] == 20 and training["batch_size"] == 64
    check_config(config)


def test_minimal_config_gets_top_level_defaults(config):
    minimal = {"datasets": {"toy": copy.deepcopy(config["datasets"]["digits"])}}
    validate(minimal, SCHEMA)
    assert minimal["seed"] == 0 and minimal["default_datasets"] == ["digits"]


def _set(config, dotted, value):
    node = config
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


_DELETE = object()
D = "datasets.digits."


@pytest.mark.parametrize("key,value", [
    (D + "training.epochs", "ten"),                              # wrong type
    (D + "training.batch_size", 0),                              # below minimum
    (D + "training.gamma", 1.5),                                 # gamma outside [0, 1]
    (D + "training.gamma", -0.1),
    (D + "threats.linf.eps", -0.1),                              # negative eps
    (D + "threats.l2.norm", "l1"),                               # unknown norm
    (D + "threats.linf.steps", 0),
    (D + "training.architectures", ["small_cnn", "vgg16"]),      # unknown architecture
    (D + "labelers.lanet.arch", "resnet50"),
    (D + "generators.ddpm.scheduler", "euler"),                  # unknown scheduler
    ("datasets.cifar10.generators.stylegan.noise_mode", "none"),
    ("datasets.cifar10.generators.stylegan.truncation_psi", -0.5),
    (D + "generators.gan.labels_from", "splitnet"),
    (D + "training.model_selection", "median"),
    (D + "training.attack_batchnorm", "frozen"),
    (D + "filter.threshold", 1.2),
    (D + "source.kind", "imagenet"),
    ("datasets.cifar10.source.url", "mirror.example/cifar-10-python.tar.gz"),  # not an http(s) URL
    (D + "training.val_fraction", 1.0),
    (D + "training.unknown_key", 1),                             # additionalProperties: false
    (D + "training.generator", _DELETE),                         # required key missing
    ("seed", -1),
    ("datasets.bad name", {}),                                   # dataset name pattern
    (D + "discrimination.seeds", [0, 0]),                        # a repeated discrimination seed
    (D + "discrimination.seeds", []),
    (D + "seed_study.seeds", [0]),                               # one seed has no interval
])
def test_bad_configs_are_rejected_by_the_schema(raw_config, key, value):
    bad = copy.deepcopy(raw_config)
    if key == "datasets.bad name":
        bad["datasets"]["bad name"] = copy.deepcopy(bad["datasets"]["digits"])
    else:
        _set(bad, key, value)
    with pytest.raises(WorkflowError) as info:
        validate(bad, SCHEMA)
    assert key.split(".")[-1] in str(info.value)  # rejected for this key, not another


@pytest.mark.parametrize("change,names", [
    (lambda c: _set(c, D + "training.generator", "vae"), "datasets.digits.training.generator"),
    (lambda c: _set(c, D + "generator_ranking.generators", ["ddpm", "vae"]), "datasets.digits.generator_ranking"),
    (lambda c: _set(c, D + "generator_ranking.threat", "l1"), "datasets.digits.generator_ranking.threat"),
    (lambda c: _set(c, D + "score_groups.threat", "l1"), "datasets.digits.score_groups.threat"),
    (lambda c: _set(c, D + "discrimination.eps", [0.1, 0.0]), "datasets.digits.discrimination.eps"),
    (lambda c: _set(c, D + "discrimination.eval_steps", 2), "datasets.digits.discrimination.eval_steps"),
    (lambda c: _set(c, D + "discrimination.eps_warmup_epochs", 20), "datasets.digits.discrimination.eps_warmup"),
    (lambda c: _set(c, D + "selection.methods", ["random", "random"]), "datasets.digits.selection.methods"),
    (lambda c: _set(c, D + "generators.gan.model", "missing"), "datasets.digits.generators.gan"),
    (lambda c: _set(c, D + "generators.ddpm.n_shards", 5001), "datasets.digits.generators.ddpm"),
    (lambda c: _set(c, D + "source", {"kind": "npz", "train": "train.npz"}), "datasets.digits.source"),
    (lambda c: _set(c, D + "source", {"kind": "npz", "test": "test.npz"}), "datasets.digits.source"),
    (lambda c: _set(c, "default_datasets", ["digits", "mnist"]), "default_datasets"),
    (lambda c: _set(c, "datasets.cifar10.source", {"kind": "cifar10"}), "datasets.cifar10.source"),
    (lambda c: _set(c, "datasets.cifar10.source.url", "https://mirror.example/cifar-10-python.tar.gz"),
     "datasets.cifar10.source.url"),
    (lambda c: _set(c, D + "generators.extra", {"kind": "npz"}), "datasets.digits.generators.extra"),
    (lambda c: _set(c, D + "generators.extra", {"kind": "diffusers", "model": "ddpm"}),
     "datasets.digits.generators.extra"),
    (lambda c: _set(c, D + "diffusion_models.ddpm.attention_levels", [2]),
     "datasets.digits.diffusion_models.ddpm.attention_levels"),
    (lambda c: _set(c, D + "threats.linf.step_size", 0.0), "datasets.digits.threats.linf.step_size"),
    (lambda c: _set(c, "datasets.cifar10.generators.stylegan.model", _DELETE), "datasets.cifar10.generators.stylegan"),
    (lambda c: _set(c, D + "generators.ddpm.truncation_psi", 0.5), "datasets.digits.generators.ddpm"),
    (lambda c: _set(c, D + "generators.ddpm.labels_from", "generator"), "datasets.digits.generators.ddpm"),
])
def test_check_config_names_the_offending_key(config, change, names):
    bad = copy.deepcopy(config)
    change(bad)
    with pytest.raises(ConfigError) as info:
        check_config(bad)
    assert names in str(info.value)


def test_check_config_accepts_consistent_edge_cases(config):
    ok = copy.deepcopy(config)
    ok["datasets"]["digits"]["generators"]["ddpm"]["n_shards"] = 5000  # n_shards == n_images
    ok["datasets"]["digits"]["source"] = {"kind": "npz", "train": "a.npz", "test": "b.npz"}
    ok["datasets"]["digits"]["threats"]["none"] = {"norm": "linf", "eps": 0.0, "step_size": 0.0, "steps": 1}
    ok["default_datasets"] = ["digits", "cifar10"]
    ok["datasets"]["cifar10"]["source"] = {"kind": "cifar10", "download": True}  # fetched: no `root` read
    check_config(ok)


def test_canonical_sorts_keys_recursively():
    value = {"b": 1, "a": {"d": [{"z": 1, "y": 2}], "c": (3, 4)}}
    result = canonical(value)
    assert list(result) == ["a", "b"]
    assert list(result["a"]) == ["c", "d"]
    assert list(result["a"]["d"][0]) == ["y", "z"]
    assert result["a"]["c"] == [3, 4]
    assert result == value | {"a": {"d": [{"z": 1, "y": 2}], "c": [3, 4]}}


def test_training_settings_have_sorted_keys_and_no_run_keys(config):
    settings = training_settings(config, "digits", "linf", "small_cnn")
    assert list(settings) == sorted(settings)
    assert list(settings["threat"]) == sorted(settings["threat"])
    assert settings["arch"] == "small_cnn"
    assert settings["threat"] == config["datasets"]["digits"]["threats"]["linf"]
    assert not {"generator", "architectures", "seeds"} & set(settings)
    assert settings["gamma"] == 0.4 and settings["epochs"] == 20


def test_settings_do_not_depend_on_yaml_key_order(config):
    shuffled = copy.deepcopy(config)
    training = shuffled["datasets"]["digits"]["training"]
    shuffled["datasets"]["digits"]["training"] = dict(reversed(list(training.items())))
    threat = shuffled["datasets"]["digits"]["threats"]["l2"]
    shuffled["datasets"]["digits"]["threats"]["l2"] = dict(reversed(list(threat.items())))
    a = training_settings(config, "digits", "l2", "small_cnn")
    b = training_settings(shuffled, "digits", "l2", "small_cnn")
    assert repr(a) == repr(b)


def test_stylegan_settings_get_their_defaults_and_labels_from_stays_out(config):
    settings = generator_settings(config, "cifar10", "stylegan")
    assert settings["truncation_psi"] == 1.0 and settings["noise_mode"] == "const" and settings["class_labels"] is None
    assert "labels_from" not in settings  # a labelling choice does not resample images
    assert labels_from(config, "cifar10", "stylegan") == "lanet"
    assert labels_from(config, "digits", "ddpm") == "lanet"  # the default
    assert "truncation_psi" not in generator_settings(config, "digits", "ddpm")  # other kinds unchanged
    edited = copy.deepcopy(config)
    edited["datasets"]["cifar10"]["generators"]["stylegan"]["truncation_psi"] = 0.7
    assert generator_settings(edited, "cifar10", "stylegan")["truncation_psi"] == 0.7
    assert pipeline_model(config, "cifar10", "stylegan") is None  # an outside pickle, not a pipeline model


def test_labeler_and_generator_settings_sorted(config):
    for settings in (labeler_settings(config, "digits", "lanet"), generator_settings(config, "digits", "ddpm")):
        assert list(settings) == sorted(settings)
    assert labeler_settings(config, "digits", "splitnet")["arch"] == "mlp"


def test_targets_and_run_paths(config):
    figures = ["training_curves_linf.png", "training_curves_l2.png", "synthetic/ddpm/samples_per_class.png"]
    tables = ["port_linf.csv", "summary_linf.csv", "port_l2.csv", "summary_l2.csv", "certified.csv",
              "certified_summary.csv"]
    # the audit of the training generator and of every ranked one (the generators the target samples)
    audits = lambda generators: [f"synthetic/{g}/audit.{ext}" for g in generators for ext in ("csv", "png")]  # noqa: E731
    assert final_targets(config) == [f"results/digits/{name}" for name in
                                     [*tables, *figures, *audits(["ddpm", "gan", "ddpm-cond"]), "arc.csv",
                                      "arc_summary.csv", "generators.csv"]]
    # cifar10 ranks the DDPM against StyleGAN2-ADA (paper Tables 4 and 6) and trains the score groups (Figure 5)
    assert final_targets(config, ["cifar10"]) == [f"results/cifar10/{name}" for name in
                                                  [*tables, *figures, *audits(["ddpm", "stylegan"]), "arc.csv",
                                                   "arc_summary.csv", "generators.csv", "score_groups.csv"]]
    assert "results/digits/seeds.csv" not in final_targets(config)  # a study, not a default target
    no_smoothing = {**config, "datasets": {"digits": {k: v for k, v in config["datasets"]["digits"].items()
                                                      if k != "smoothing"}}}
    assert "results/digits/certified.csv" not in final_targets(no_smoothing)
    paths = run_paths(config, "cifar10", "linf", RUN_MODEL)
    assert len(paths) == 3 * 2 * 1  # (baseline, adaptive, random) x architectures x seeds
    assert "results/cifar10/runs/linf/port-adaptive/wrn-34-10/seed0/model.pt" in paths
    assert "results/cifar10/runs/linf/baseline/resnet18/seed0/model.pt" in paths


def test_run_rows_and_settings_of_the_new_stages(config):
    assert run_row("baseline", "small_cnn", 0)["selection"] == "none"
    row = run_row("port-adaptive", "small_cnn", 1)
    assert (row["method"], row["selection"]) == ("port", "adaptive")
    assert "gamma" not in row and "epochs" not in row  # read from the trained model's metadata
    with pytest.raises(ValueError, match="port-<"):
        run_row("port", "small_cnn", 0)  # not a run name
    clean = discriminator_settings(config, "digits", 0.0)
    assert clean["threat"] is None and clean["gamma"] == 0.5 and clean["model_selection"] == "best"
    assert clean["patience"] == config["datasets"]["digits"]["discrimination"]["patience"]
    robust = discriminator_settings(config, "digits", 0.05)
    steps = config["datasets"]["digits"]["discrimination"]["steps"]
    assert robust["threat"] == {"norm": "linf", "eps": 0.05, "step_size": 2.5 * 0.05 / steps, "steps": steps}
    assert list(robust) == sorted(robust)
    assert evaluation_settings(config, "digits", "port-group1")["autoattack"] is False
    assert evaluation_settings(config, "digits", "port-random")["autoattack"] is True
    assert transfer_settings(config, "digits")["threat"] == config["datasets"]["digits"]["threats"]["linf"]
    assert selection_of("port-group2") == "group2" and selection_of("baseline") is None
    assert pipeline_model(config, "digits", "gan") == "results/digits/gan/gan.pt"
    assert pipeline_model(config, "digits", "ddpm-4steps") == "results/digits/diffusion/ddpm"
    assert pipeline_model(config, "cifar10", "ddpm") is None  # a hub id


def test_baseline_settings_ignore_gamma(config):
    """The baseline has no synthetic half: its settings carry gamma 1.0, so a gamma edit
    reruns only the PORT runs (the summary tables report 1.0 for the baseline too)."""
    edited = copy.deepcopy(config)
    edited["datasets"]["digits"]["training"]["gamma"] = 0.7
    for settings in (lambda c, method: training_settings(c, "digits", "linf", "small_cnn", method),
                     lambda c, method: smoothing_settings(c, "digits", "small_cnn", method)):
        assert settings(config, "baseline") == settings(edited, "baseline")
        assert settings(edited, "baseline")["gamma"] == 1.0 and settings(edited, "port")["gamma"] == 0.7


def test_smoothing_runs_train_for_the_smoothing_epochs(config):
    edited = copy.deepcopy(config)
    edited["datasets"]["digits"]["smoothing"]["epochs"] = 3
    assert smoothing_epochs(edited, "digits") == 3 == smoothing_settings(edited, "digits", "small_cnn")["epochs"]
    assert smoothing_epochs(config, "digits") == config["datasets"]["digits"]["training"]["epochs"]


def test_run_name_grammar_has_one_parser():
    from port import paths

    for selection in (None, "random", "adaptive", "group2"):
        assert paths.selection_of(paths.run_name(selection)) == selection
    for bad in ("port", "port-", "port-best", "baseline2", "port-group"):
        with pytest.raises(ValueError, match="run name"):
            paths.selection_of(bad)
    assert [paths.group_of(s) for s in ("group0", "group12", "adaptive", None)] == [0, 12, None, None]
    assert paths.needs_scores("adaptive") and paths.needs_scores("group1") and not paths.needs_scores("random")
    assert paths.fill(paths.LABELER_MODEL, slot="lanet") == "results/{dataset}/labelers/lanet/model.pt"
    # the schema's selection names (what a config may ask for) are the grammar's
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    methods = schema["$defs"]["dataset"]["properties"]["selection"]["properties"]
    assert set(methods["methods"]["items"]["enum"]) == set(paths.SELECTIONS)


def test_the_snakefile_helpers_import_nothing_heavy():
    """port.paths, port.settings and port.inputs (for a config that names no files) are what the
    Snakefile imports: DAG parsing must not load torch, h5py or pandas."""
    code = ("import sys, port.paths, port.settings, port.inputs; "
            "print(sorted(m for m in ('torch', 'h5py', 'pandas') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_seed_study_runs_are_the_table_runs_over_more_seeds(config):
    study = seed_study_paths(config, "digits", RUN_EVAL)
    assert config["datasets"]["digits"]["seed_study"]["seeds"] == [0, 1, 2]
    # (baseline, adaptive, random) x (linf, l2) x small_cnn x 3 seeds, by the result tables' own run paths
    assert len(study) == 3 * 2 * 1 * 3 == len(set(study))
    assert set(run_paths(config, "digits", "l2", RUN_EVAL)) < set(study)
    assert "results/digits/runs/linf/port-random/small_cnn/seed2/eval.csv" in study
    assert config["datasets"]["cifar100"]["seed_study"]["seeds"] == [0, 1, 2]  # the schema default


def test_arc_discriminators_are_trained_per_seed(config):
    assert config["datasets"]["digits"]["discrimination"]["seeds"] == [0]  # the fast default
    assert config["datasets"]["cifar10-wang2023"]["discrimination"]["seeds"] == [0]  # the schema default
    two = copy.deepcopy(config)
    two["datasets"]["digits"]["discrimination"]["seeds"] = [0, 1]
    inputs = arc_curve_inputs(two, "digits", "gan")
    assert len(inputs) == 2 * 4 == len(set(inputs))  # seeds x the eps grid
    assert inputs[:2] == ["results/digits/discriminators/gan/eps0/seed0/metrics.csv",
                          "results/digits/discriminators/gan/eps1/seed0/metrics.csv"]
    assert "results/digits/discriminators/gan/eps3/seed1/metrics.csv" in inputs


def test_cifar_configs_follow_the_paper(config):
    cifar10, cifar100 = config["datasets"]["cifar10"], config["datasets"]["cifar100"]
    assert cifar10["generators"]["ddpm"]["n_images"] == 15_000_000 and cifar10["selection"]["k"] == 10_000_000
    assert cifar10["training"]["epochs"] == 200
    assert cifar10["threats"]["l2"]["eps"] == pytest.approx(127 / 255, abs=1e-15)
    assert cifar10["threats"]["l2"]["step_size"] == pytest.approx(127 / 255 / 4, abs=1e-15)
    assert cifar10["score_groups"]["enabled"] and cifar10["score_groups"]["n_groups"] == 10
    assert cifar10["generator_ranking"]["n_train"] == 1_000_000
    assert cifar10["discrimination"]["seeds"] == [0, 1, 2]
    assert cifar100["source"]["kind"] == "cifar100" and cifar100["generators"]["ddpm"]["n_images"] == 1_000_000
    assert cifar100["training"]["weight_decay"] == 1.0e-3
    # the rest of the training block is cifar10's (a YAML merge key)
    assert {k: v for k, v in cifar100["training"].items() if k != "weight_decay"} == \
        {k: v for k, v in cifar10["training"].items() if k != "weight_decay"}
    assert training_settings(config, "cifar100", "linf", "resnet18")["weight_decay"] == 1.0e-3


def _planned_jobs(*targets: str, workdir: Path) -> dict[str, int]:
    """{rule: job count} of `snakemake -n targets` with the shipped config, in an empty directory."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                             "-n", *targets, "--quiet", "rules"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (result.stdout + result.stderr).split("Job stats:")[1].split("total")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def test_cifar_and_seed_study_targets_plan_without_data(config, tmp_path):
    cifar10 = _planned_jobs("results/cifar10/port_linf.csv", "results/cifar10/summary_linf.csv", workdir=tmp_path)
    assert cifar10["summarize"] == 1  # one job writes the run table and its seed summary
    assert cifar10["sample_shard"] == 300 and cifar10["train_robust"] == 3 * 2  # runs x architectures
    assert cifar10["audit_synthetic"] == 1  # the training generator's, before its selection drops test near-copies
    cifar100 = _planned_jobs("results/cifar100/port_linf.csv", workdir=tmp_path)
    assert cifar100["sample_shard"] == 20 and cifar100["train_robust"] == 2 * 2  # baseline, random x 2 archs
    assert "train_scorer" not in cifar100  # no selection by score
    digits = config["datasets"]["digits"]
    seeds = _planned_jobs("results/digits/seeds.csv", workdir=tmp_path)
    assert seeds["summarize_seed_study"] == 1
    assert seeds["train_robust"] == seeds["evaluate"] == (len(digits["selection"]["methods"]) + 1) * \
        len(digits["threats"]) * len(digits["training"]["architectures"]) * len(digits["seed_study"]["seeds"])
