"""Recipe options (port.recipe): TRADES, weight averaging, label smoothing, the synthetic share of
a batch, parameter groups, warm-up; confidence selection; the RobustBench export; the study summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_training import SETTINGS, _assert_same_weights, _killed_in_epoch2, _run, _weights, toy_data  # noqa: F401

import port.training as training
from port import recipe
from port.artifacts import load_torch, write_csv
from port.attacks import Attack, batchnorm_mode
from port.settings.checks import check_config
from port.settings.studies import recipe_settings
from port.settings.training import synthetic_batch_size
from port.errors import ConfigError
from port.export import export_robustbench
from port.models import WideResNet, build_model, load_model
from port.reporting import summarize_recipe
from port.selection import choose
from port.settings.schema import SCHEMA as SCHEMA_FILE

RECIPE = {**SETTINGS, "loss": "trades", "trades_beta": 5.0, "ema_decay": 0.9, "label_smoothing": 0.1,
          "attack_batchnorm": "eval", "synthetic_fraction": 0.6, "nesterov": True, "weight_decay_bn": False,
          "warmup_epochs": 1}


# --- losses ---------------------------------------------------------------------------------------

def test_trades_loss_matches_a_hand_computation():
    clean = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0], [0.0, 2.0, 0.0]])
    y = torch.tensor([0, 2])
    beta, smoothing = 5.0, 0.1
    expected = []
    for i in range(2):
        p = [math.exp(v) for v in clean[i].tolist()]
        q = [math.exp(v) for v in adv[i].tolist()]
        p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
        # smoothed CE: (1 - s) * -log p_y + s * mean_k(-log p_k)
        ce = (1 - smoothing) * -math.log(p[y[i]]) + smoothing * sum(-math.log(v) for v in p) / 3
        kl = sum(a * math.log(a / b) for a, b in zip(p, q))
        expected.append(ce + beta * kl)
    got = recipe.ce_plus_kl(clean, adv, y, beta, smoothing)
    assert got.tolist() == pytest.approx(expected, rel=1e-6)
    # gamma weighting of the per-image TRADES loss, as for PGD
    loss, real, syn = training.weighted_halves(got, 1, 0.3)
    assert float(loss) == pytest.approx(0.3 * expected[0] + 0.7 * expected[1], rel=1e-6)


def test_trades_attack_raises_the_kl_inside_the_ball_with_batchnorm_frozen():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3)).train()
    x = torch.rand(6, 1, 8, 8)
    attack = Attack("linf", 0.1, 0.05, 5)
    running = model[1].running_mean.clone()
    with batchnorm_mode(model, "eval"):
        x_adv = recipe.trades_attack(model, x, attack, recipe.trades_start(x))
        kl_start = recipe.kl_per_sample(model(x), model(x + recipe.trades_start(x))).sum()
        kl_adv = recipe.kl_per_sample(model(x), model(x_adv)).sum()
    assert torch.equal(model[1].running_mean, running), "crafting must not move BatchNorm statistics"
    assert model[1].training
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert kl_adv > 10 * kl_start


# --- weight averaging -----------------------------------------------------------------------------

@pytest.mark.parametrize("step, expected", [(0, 1 / 10), (1, 2 / 11), (10, 11 / 20), (1000, 1001 / 1010)])
def test_ema_warm_up_schedule(step, expected):
    assert recipe.ema_decay_at(step, 0.995) == pytest.approx(expected, rel=1e-12)
    assert recipe.ema_decay_at(step, 0.15) == pytest.approx(min(0.15, expected), rel=1e-12)


def test_weight_average_follows_the_schedule_and_copies_batchnorm_buffers():
    live = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = recipe.WeightAverage(live, 0.995)
    start = live[0].weight.detach().clone()
    with torch.no_grad():
        live[0].weight.add_(1.0)
        live[1].running_mean.fill_(3.0)
    average.update(live)
    d = 0.1  # step 0
    assert torch.allclose(average.model[0].weight, d * start + (1 - d) * (start + 1.0))
    assert torch.equal(average.model[1].running_mean, live[1].running_mean)
    assert average.step == 1 and not any(p.requires_grad for p in average.model.parameters())


def test_resumed_run_with_ema_is_bitwise_equal_to_an_uninterrupted_one(toy_data, tmp_path, monkeypatch):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(toy_data, straight, RECIPE)
    saved = _killed_in_epoch2(toy_data, resumed, monkeypatch, RECIPE)
    assert saved["epoch"] == 1 and saved["ema"]["step"] > 0 and "model" in saved
    _run(toy_data, resumed, RECIPE)
    _assert_same_weights(_weights(resumed / "model.pt"), _weights(straight / "model.pt"))
    columns = ["epoch", "lr", "loss_real", "loss_synthetic", "train_acc", "val_clean_acc", "val_robust_acc"]
    pd.testing.assert_frame_equal(pd.read_csv(resumed / "history.csv")[columns],
                                  pd.read_csv(straight / "history.csv")[columns])


def test_saved_model_is_the_weight_average(toy_data, tmp_path, monkeypatch):
    averages = []
    original = recipe.WeightAverage

    class Recording(original):
        def __init__(self, model, decay):
            super().__init__(model, decay)
            averages.append(self)

    monkeypatch.setattr(training, "WeightAverage", Recording)
    _run(toy_data, tmp_path, {**RECIPE, "epochs": 1})
    saved = _weights(tmp_path / "model.pt")
    _assert_same_weights(saved, averages[0].model.state_dict())


# --- batches, optimizer, schedule -----------------------------------------------------------------

@pytest.mark.parametrize("real, fraction, synthetic", [(32, 0.5, 32), (30, 0.7, 70), (16, 0.75, 48), (64, 0.7, 149)])
def test_synthetic_batch_size(real, fraction, synthetic):
    assert synthetic_batch_size(real, fraction) == synthetic


def test_synthetic_fraction_gives_the_exact_count_in_every_batch(toy_data, tmp_path, monkeypatch):
    counts, mix = [], training.mix_batches

    def recording(x_real, y_real, x_syn=None, y_syn=None, n_synthetic=None):
        counts.append((len(x_real), len(x_syn)))
        return mix(x_real, y_real, x_syn, y_syn, n_synthetic)

    monkeypatch.setattr(training, "mix_batches", recording)
    _run(toy_data, tmp_path, {**SETTINGS, "epochs": 1, "batch_size": 16, "synthetic_fraction": 0.75})
    assert counts == [(16, 48)] * (180 // 16)  # one pass over the 180 real training images


def test_mix_batches_refuses_a_wrong_synthetic_count():
    with pytest.raises(ValueError, match="expected 6 synthetic images"):
        training.mix_batches(torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.long),
                             torch.rand(5, 1, 2, 2), torch.zeros(5, dtype=torch.long), 6)


def test_no_weight_decay_reaches_batchnorm_or_biases_when_disabled():
    model = build_model("small_cnn", 1, 3, 8, [0.5], [0.25])
    groups = recipe.parameter_groups(model, 0.1, decay_batchnorm=False)
    optimizer = torch.optim.SGD(groups, lr=1.0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # zero gradients: only weight decay can move a parameter
    batchnorm = {f"{name}.{kind}" for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
                 for kind in ("weight", "bias")}
    for name, p in model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == (name not in batchnorm and not name.endswith("bias")), name
    assert len(recipe.parameter_groups(model, 0.1, decay_batchnorm=True)) == 1


def test_lr_warm_up_then_cosine_and_plain_cosine_without_warm_up():
    assert [recipe.lr_factor(s, 10, 2) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert recipe.lr_factor(10, 10, 2) == pytest.approx(0.0, abs=1e-12)
    assert [recipe.lr_factor(s, 8, 0) for s in (0, 4, 8)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-12)


# --- architectures --------------------------------------------------------------------------------

def test_silu_wide_resnet_uses_silu():
    torch.manual_seed(0)
    relu, silu = WideResNet(3, 10, 10, 1), WideResNet(3, 10, 10, 1, F.silu)
    silu.load_state_dict(relu.state_dict())  # same weights, other activation
    x = torch.rand(2, 3, 8, 8)
    assert silu.eval()(x).shape == (2, 10) and not torch.allclose(silu(x), relu.eval()(x))
    assert isinstance(build_model("wrn-28-10-silu", 3, 10, 32, [0.5] * 3, [0.25] * 3)[1], WideResNet)


# --- confidence selection -------------------------------------------------------------------------

def test_confidence_keeps_exactly_the_top_fraction_of_each_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    confidence = rng.random(200)
    keep = rng.random(200) < 0.8
    chosen = choose(keep, "confidence", None, 0, labels=labels, confidence=confidence, fraction=0.3)
    assert np.all(np.diff(chosen) > 0) and keep[chosen].all()
    for label in range(3):
        members = np.flatnonzero(keep & (labels == label))
        expected = members[np.argsort(-confidence[members])][:int(np.floor(0.3 * len(members) + 0.5))]
        assert set(chosen[labels[chosen] == label]) == set(expected)


# --- config, export, study summary ----------------------------------------------------------------

def _config(training):
    import yaml
    from snakemake.utils import validate

    config = yaml.safe_load(open("config/config.yaml"))
    config["datasets"]["digits"]["training"].update(training)
    validate(config, str(SCHEMA_FILE))
    return config


def test_trades_asks_for_frozen_batchnorm_and_variants_override_the_training_block():
    with pytest.raises(ConfigError, match="attack_batchnorm"):
        check_config(_config({"loss": "trades"}))
    config = _config({})
    check_config(config)
    settings = recipe_settings(config, "digits", "port-trades-ema-ls-sf07", "small_cnn")
    assert settings["loss"] == "trades" and settings["synthetic_fraction"] == 0.7
    assert settings["lr"] == config["datasets"]["digits"]["training"]["lr"]
    assert recipe_settings(config, "digits", "baseline", "small_cnn")["gamma"] == 1.0


def test_robustbench_export_loads_with_torch_load_and_the_architecture(toy_data, tmp_path):
    _run(toy_data, tmp_path, {**SETTINGS, "epochs": 1})
    write_csv(pd.DataFrame([{"norm": "linf", "eps": 0.1, "clean_acc": 0.9, "pgd_acc": 0.5, "autoattack_acc": 0.4,
                             "autoattack_attacks": "standard", "n_test": 50}]), tmp_path / "eval.csv")
    info = export_robustbench(model_path=tmp_path / "model.pt", eval_path=tmp_path / "eval.csv",
                              info_out=tmp_path / "rb.json", weights_out=tmp_path / "rb.pt", run="linf/port-adaptive/small_cnn/seed0", dataset="toy", run_config={"lr": 0.05})
    assert json.loads((tmp_path / "rb.json").read_text()) == info
    assert info["threat_model"] == "Linf" and info["autoattack_acc"] == 40.0 and info["n_synthetic"] == 200
    assert info["autoattack_attacks"] == "standard"  # RobustBench takes standard AutoAttack results only
    assert info["n_test_duplicates_removed"] is None  # the toy synthetic set does not come from port.selection
    model = build_model(**info["model_spec"])
    model.load_state_dict(torch.load(tmp_path / "rb.pt", weights_only=True))
    reference, _ = load_model(tmp_path / "model.pt")
    x = torch.rand(4, 1, 8, 8)  # [0, 1] images: normalisation is inside the model
    assert torch.equal(model.eval()(x), reference(x))


def test_robustbench_export_without_autoattack_is_strict_json_saying_why(toy_data, tmp_path):
    """A run evaluated without AutoAttack: null, not a bare NaN that strict parsers refuse."""
    _run(toy_data, tmp_path, {**SETTINGS, "epochs": 1})
    write_csv(pd.DataFrame([{"norm": "linf", "eps": 0.1, "clean_acc": 0.9, "pgd_acc": 0.5,
                             "autoattack_acc": float("nan"), "autoattack_attacks": "none", "n_test": 50}]),
              tmp_path / "eval.csv")
    export_robustbench(model_path=tmp_path / "model.pt", eval_path=tmp_path / "eval.csv", info_out=tmp_path / "rb.json",
                       weights_out=tmp_path / "rb.pt", run="linf/baseline/small_cnn/seed0", dataset="toy", run_config={})
    info = json.loads((tmp_path / "rb.json").read_text(), parse_constant=lambda name: pytest.fail(f"bare {name}"))
    assert info["autoattack_acc"] is None and info["clean_acc"] == 90.0
    assert info["missing"] == {"autoattack_acc": "AutoAttack was not run: the run's evaluation.autoattack is false "
                                                 f"({tmp_path / 'eval.csv'})"}


def test_recipe_summary_pairs_seeds_and_calls_an_interval_over_zero_no_difference(tmp_path):
    rows = []
    for seed, (a, b, c) in enumerate([(0.50, 0.60, 0.61), (0.52, 0.61, 0.59), (0.51, 0.62, 0.60)]):
        for variant, value in (("baseline", a), ("port", b), ("port-trades", c)):
            rows.append({"variant": variant, "architecture": "small_cnn", "seed": seed, "clean_acc": value,
                         "pgd_acc": value, "autoattack_acc": value})
    paths = []
    for i, row in enumerate(rows):
        write_csv(pd.DataFrame([row]), tmp_path / f"{i}.csv")
        paths.append(tmp_path / f"{i}.csv")
    summary = summarize_recipe(eval_csvs=paths, out_csv=tmp_path / "runs.csv", out_summary=tmp_path / "summary.csv")
    aa = summary[summary["metric"] == "autoattack_acc"].set_index("variant")
    assert aa.loc["port", "verdict"] == "higher" and aa.loc["port", "mean_difference"] == pytest.approx(0.1)
    assert aa.loc["port", "compared_to"] == "baseline" and aa.loc["port-trades", "compared_to"] == "port"
    assert aa.loc["port-trades", "verdict"] == "no difference"
    assert pd.isna(aa.loc["baseline", "compared_to"])


@pytest.mark.parametrize("loss, atol", [("pgd", 1e-6), ("trades", 1e-3)])
def test_two_processes_train_the_single_process_model_with_the_recipe(toy_data, tmp_path, monkeypatch, loss, atol):
    """TRADES starts its attack 0.001 from x, where the KL's gradient is tiny: its sign, hence the
    adversarial example, flips with floating-point order, so TRADES agrees more loosely."""
    from test_training import DDP_SETTINGS

    settings = {**DDP_SETTINGS, **{k: RECIPE[k] for k in ("trades_beta", "ema_decay", "label_smoothing",
                                                          "attack_batchnorm")}, "loss": loss, "synthetic_fraction": 0.75}
    _run(toy_data, tmp_path / "one", settings)
    monkeypatch.setenv("PORT_CPU_PROCESSES", "2")
    _run(toy_data, tmp_path / "two", settings)
    one, two = _weights(tmp_path / "one" / "model.pt"), _weights(tmp_path / "two" / "model.pt")
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=0, atol=atol)


def test_robustbench_targets_and_run_config():
    from port import paths
    from port.settings.studies import recipe_paths
    from port.settings.targets import robustbench_targets
    from port.settings.evaluation import run_config

    config = _config({})
    targets = robustbench_targets(config)
    assert "results/digits/robustbench/linf/port-adaptive/small_cnn/seed0.json" in targets
    assert "results/digits/robustbench/l2/baseline/small_cnn/seed0.json" in targets
    port = run_config(config, "digits", "linf", "small_cnn", "port-adaptive")
    assert port["selection"]["method"] == "adaptive" and port["training"]["threat"]["norm"] == "linf"
    assert "selection" not in run_config(config, "digits", "linf", "small_cnn", "baseline")
    assert len(recipe_paths(config, "digits", paths.RECIPE_EVAL)) == 4 * 3


def test_wang2023_presets_plan_on_their_published_parts(tmp_path):
    """Both presets plan from the two 20M parts as published (tiny stand-ins in the real format):
    the recipe on every image, and the recipe on PORT's adaptive half."""
    import re
    import subprocess
    import sys

    from conftest import REPO

    parts = tmp_path / "data" / "cifar10" / "edm"
    parts.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("20m_part1.npz", "20m_part2.npz"):
        np.savez(parts / name, image=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
                 label=rng.integers(0, 10, 8))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                             "-n", "results/cifar10-wang2023/port_linf.csv", "results/cifar10-wang2023-port/port_linf.csv"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    planned = result.stdout
    for dataset, selection in (("cifar10-wang2023", "random"), ("cifar10-wang2023-port", "adaptive")):
        assert f"results/{dataset}/runs/linf/port-{selection}/wrn-28-10-silu/seed0/model.pt" in planned
    assert re.search(r"^score_shard\s+\d+$", planned, flags=re.M)  # the PORT preset scores the images
