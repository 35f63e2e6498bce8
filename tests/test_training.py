"""PORT training: 1:1 batch mixing, the gamma-weighted loss, and an end-to-end run with resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import port.training as training
from port.artifacts import ImageWriter, load_torch, provenance, write_images
from port.errors import ArtifactError, SettingsError
from port.settings.data import validation_count
from port.models import build_model, load_model, model_spec, save_model, training_record
from port.recipe import ce_plus_kl
from port.training import mix_batches, port_loss, train
from port.data import validation_split
from port.settings.training import TrainSettings

# --- mix_batches and port_loss ------------------------------------------------------------------


def test_mix_batches_real_first_one_to_one():
    xr, yr = torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 2, 3])
    xs, ys = torch.ones(4, 1, 2, 2), torch.tensor([4, 5, 6, 7])
    x, y, n_real = mix_batches(xr, yr, xs, ys)
    assert n_real == 4 and x.shape == (8, 1, 2, 2)
    assert torch.equal(x[:4], xr) and torch.equal(x[4:], xs)
    assert y.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]


def test_mix_batches_without_synthetic_half():
    xr, yr = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 2])
    x, y, n_real = mix_batches(xr, yr)
    assert x is xr and y is yr and n_real == 3


@pytest.mark.parametrize("n_syn", [3, 5])
def test_mix_batches_refuses_unequal_halves(n_syn):
    with pytest.raises(ValueError, match="expected 4 synthetic images next to 4 real ones"):
        mix_batches(torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.long),
                    torch.rand(n_syn, 1, 2, 2), torch.zeros(n_syn, dtype=torch.long))


def _cross_entropy_by_hand(logits, y):
    logits = logits.double()
    log_z = torch.log(torch.exp(logits - logits.max(1, keepdim=True).values).sum(1)) + logits.max(1).values
    return (log_z - logits[torch.arange(len(y)), y]).mean()


@pytest.mark.parametrize("gamma", [0.0, 0.4, 1.0])
def test_port_loss_is_gamma_weighted(gamma):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 4, generator=g) * 3
    y = torch.randint(0, 4, (10,), generator=g)
    real, syn = _cross_entropy_by_hand(logits[:5], y[:5]), _cross_entropy_by_hand(logits[5:], y[5:])
    assert abs(real - syn) > 0.1  # so the weighting is visible
    loss, loss_real, loss_syn = port_loss(logits, y, 5, gamma)
    assert float(loss) == pytest.approx(float(gamma * real + (1 - gamma) * syn), rel=1e-5)
    assert float(loss_real) == pytest.approx(float(real), rel=1e-5)
    assert float(loss_syn) == pytest.approx(float(syn), rel=1e-5)


def test_port_loss_gradient_follows_the_weights():
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    port_loss(logits, y, 4, 1.0)[0].backward()
    assert logits.grad[4:].abs().max() == 0 and logits.grad[:4].abs().max() > 0


def test_port_loss_without_synthetic_half_is_plain_cross_entropy():
    g = torch.Generator().manual_seed(2)
    logits, y = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    loss, loss_real, loss_syn = port_loss(logits, y, 6, 0.4)
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    assert float(loss) == pytest.approx(float(_cross_entropy_by_hand(logits, y)), rel=1e-5)
    assert torch.equal(loss, loss_real) and float(loss_syn) == 0.0


def test_settings_reject_gamma_outside_unit_interval_and_unknown_keys():
    with pytest.raises(SettingsError, match="gamma"):
        TrainSettings.from_dict({"arch": "small_cnn", "epochs": 1, "batch_size": 8, "gamma": 1.5})
    with pytest.raises(SettingsError, match="future_key"):
        TrainSettings.from_dict({"arch": "mlp", "epochs": 1, "batch_size": 8, "future_key": 3})
    assert TrainSettings.from_dict({"arch": "mlp", "epochs": 1, "batch_size": 8}).gamma == 0.4


def test_validation_split_is_a_seeded_partition():
    train_idx, val_idx = validation_split(50, 0.2, seed=3)
    assert len(val_idx) == 10 and len(train_idx) == 40
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(50))
    again = validation_split(50, 0.2, seed=3)
    assert np.array_equal(again[1], val_idx)
    assert not np.array_equal(validation_split(50, 0.2, seed=4)[1], val_idx)


# --- end to end ---------------------------------------------------------------------------------

NUM_CLASSES = 4


def _toy_images(n, seed):
    """8x8 grey images; class k has a bright quadrant k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n).astype(np.int64)
    images = rng.integers(0, 60, (n, 8, 8, 1)).astype(np.int64)
    for k in range(NUM_CLASSES):
        r, c = divmod(k, 2)
        images[labels == k, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 180
    return images.clip(0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    images, labels = _toy_images(200, seed=0)
    pixels = images.reshape(-1, 1) / 255.0
    attrs = provenance("prepare_data", {"kind": "toy"}, 0, dataset="toy", num_classes=NUM_CLASSES,
                       channel_mean=pixels.mean(0).tolist(), channel_std=pixels.std(0).tolist())
    write_images(root / "train.h5", images, attrs, labels=labels)
    syn_images, syn_labels = _toy_images(200, seed=1)
    with ImageWriter(root / "synthetic.h5", (8, 8, 1), provenance("select", {}, 0), chunk_images=64) as writer:
        writer.append(syn_images, labels=syn_labels)
    return root


SETTINGS = dict(arch="small_cnn", epochs=2, batch_size=32, lr=0.05, gamma=0.4, val_fraction=0.1,
                threat=dict(norm="linf", eps=0.1, step_size=0.05, steps=2), val_attack_steps=1,
                model_selection="last", buffer_chunks=2)


def _run(toy_data, out, settings=SETTINGS, synthetic=True, seed=0, init_model=None):
    return train(train_path=toy_data / "train.h5", model_out=out / "model.pt", history_out=out / "history.csv",
                 checkpoint_path=out / "checkpoint.pt",
                 settings=dict(settings), seed=seed, synthetic_path=toy_data / "synthetic.h5" if synthetic else None,
                 init_model=init_model, progress=False)


def _weights(path):
    return load_torch(path)["state_dict"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_train_writes_model_and_history(toy_data, tmp_path):
    summary = _run(toy_data, tmp_path)
    model, spec = load_model(tmp_path / "model.pt", expect_arch="small_cnn", expect_classes=NUM_CLASSES)
    assert spec["in_channels"] == 1 and spec["image_size"] == 8
    assert spec["metadata"]["n_synthetic"] == 200 and summary["n_synthetic"] == 200
    # what the summary tables report comes from the model, not from the config
    assert training_record(spec["metadata"]) == {"gamma": SETTINGS["gamma"], "epochs": SETTINGS["epochs"],
                                                 "n_synthetic": 200, "n_synthetic_used": 200,
                                                 "n_test_duplicates_removed": None}  # a set not from port.selection
    # 2 epochs of 5 batches of 32: 320 synthetic draws; the stream runs on across epochs, so all 200 are used
    assert spec["metadata"]["n_synthetic_used"] == 200 and summary["n_synthetic_used"] == 200
    assert summary["selected"] == "last" and summary["train_seconds"] > 0
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert np.isfinite(history[["loss_real", "loss_synthetic", "train_acc"]].to_numpy()).all()
    assert history["val_clean_acc"].between(0, 1).all() and history["val_robust_acc"].between(0, 1).all()
    assert history["lr"].iloc[-1] < history["lr"].iloc[0] < SETTINGS["lr"]  # cosine decay per step
    assert not (tmp_path / "checkpoint.pt").exists(), "a finished run removes its resume checkpoint"
    assert not list(tmp_path.glob(".*.tmp"))
    with torch.no_grad():
        assert model(torch.rand(3, 1, 8, 8)).shape == (3, NUM_CLASSES)


def test_baseline_without_synthetic_data(toy_data, tmp_path):
    settings = {**SETTINGS, "epochs": 1, "threat": None}
    summary = _run(toy_data, tmp_path, settings, synthetic=False)
    assert summary["n_synthetic"] == 0
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["loss_synthetic"].isna().all() and history["val_robust_acc"].isna().all()
    assert history["val_clean_acc"].between(0, 1).all()


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def trained_model(toy_data, tmp_path_factory):
    """A model trained on the toy data for one epoch: initial weights for another run."""
    out = tmp_path_factory.mktemp("init")
    _run(toy_data, out, {**SETTINGS, "epochs": 1})
    return out / "model.pt"


def test_a_run_starts_from_the_initial_model_it_is_given(toy_data, tmp_path, monkeypatch, trained_model):
    first_step_weights = []
    real_step = training.TrainStep.__call__

    def recording_step(self, *args, **kwargs):
        if not first_step_weights:
            first_step_weights.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(training.TrainStep, "__call__", recording_step)
    summary = _run(toy_data, tmp_path, {**SETTINGS, "epochs": 1}, seed=5, init_model=trained_model)
    _assert_same_weights(first_step_weights[0], _weights(trained_model))
    assert summary["init_model"] == str(trained_model)
    assert load_model(tmp_path / "model.pt")[1]["metadata"]["init_model"] == str(trained_model)


def test_initial_weights_of_another_model_are_refused_naming_the_file(toy_data, tmp_path):
    for name, spec in {"mlp.pt": model_spec("mlp", 1, NUM_CLASSES, 8, [0.5], [0.5]),
                       "16px.pt": model_spec("small_cnn", 1, NUM_CLASSES, 16, [0.5], [0.5])}.items():
        save_model(build_model(**spec), spec, tmp_path / name)
        with pytest.raises(ArtifactError, match=rf"{name}: initial weights of another model: "
                                                rf"{'arch mlp' if name == 'mlp.pt' else 'image_size 16'}"):
            _run(toy_data, tmp_path, init_model=tmp_path / name)
    assert not (tmp_path / "model.pt").exists()


def test_interrupted_run_from_an_initial_model_resumes_to_the_same_model(toy_data, tmp_path, monkeypatch,
                                                                        trained_model):
    straight = tmp_path / "straight"
    _run(toy_data, straight, init_model=trained_model)
    resumed = tmp_path / "resumed"
    assert _killed_in_epoch2(toy_data, resumed, monkeypatch, init_model=trained_model)["epoch"] == 1
    _run(toy_data, resumed, init_model=trained_model)
    _assert_same_weights(_weights(resumed / "model.pt"), _weights(straight / "model.pt"))
    # the initial model is one of the run's inputs: from another one the checkpoint is not resumed
    assert _killed_in_epoch2(toy_data, tmp_path / "other", monkeypatch, init_model=trained_model)["epoch"] == 1
    _run(toy_data, tmp_path / "other")
    _run(toy_data, tmp_path / "plain")
    _assert_same_weights(_weights(tmp_path / "other" / "model.pt"), _weights(tmp_path / "plain" / "model.pt"))


def test_interrupted_run_resumes_to_the_same_model(toy_data, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    _run(toy_data, straight)

    class KilledInEpoch2(training.ArrayBatches):
        def epoch(self, epoch):
            for i, batch in enumerate(super().epoch(epoch)):
                if epoch == 1 and i == 2:
                    raise Killed("job killed during epoch 2")
                yield batch

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(training, "ArrayBatches", KilledInEpoch2)
    with pytest.raises(Killed):
        _run(toy_data, resumed)
    monkeypatch.undo()
    assert not (resumed / "model.pt").exists() and not (resumed / "history.csv").exists()
    assert load_torch(resumed / "checkpoint.pt")["state"]["epoch"] == 1

    _run(toy_data, resumed)
    # equal final weights also need the optimizer's momentum restored: epoch 2 depends on it
    _assert_same_weights(_weights(resumed / "model.pt"), _weights(straight / "model.pt"))
    columns = ["epoch", "lr", "loss_real", "loss_synthetic", "train_acc", "val_clean_acc", "val_robust_acc"]
    pd.testing.assert_frame_equal(pd.read_csv(resumed / "history.csv")[columns],
                                  pd.read_csv(straight / "history.csv")[columns])


def test_checkpoint_from_other_settings_is_ignored(toy_data, tmp_path):
    fresh = tmp_path / "fresh"
    settings = {**SETTINGS, "epochs": 1}
    _run(toy_data, fresh, settings)
    other = tmp_path / "other"
    _run(toy_data, other, {**settings, "lr": 0.01})  # leaves a checkpoint for lr 0.01
    _run(toy_data, other, settings)
    _assert_same_weights(_weights(other / "model.pt"), _weights(fresh / "model.pt"))
    assert len(pd.read_csv(other / "history.csv")) == 1


def test_rerun_after_completion_trains_again_to_the_same_model(toy_data, tmp_path):
    settings = {**SETTINGS, "epochs": 1}
    _run(toy_data, tmp_path, settings)
    first = _weights(tmp_path / "model.pt")
    _run(toy_data, tmp_path, settings)  # e.g. `snakemake -R`: no stale checkpoint short-cuts it
    _assert_same_weights(_weights(tmp_path / "model.pt"), first)
    assert len(pd.read_csv(tmp_path / "history.csv")) == 1


def _killed_in_epoch2(toy_data, out, monkeypatch, settings=SETTINGS, init_model=None) -> dict:
    """Train until epoch 2 starts, then die as a killed job would; returns the checkpoint's state."""
    class KilledInEpoch2(training.ArrayBatches):
        def epoch(self, epoch):
            if epoch == 1:
                raise Killed("job killed during epoch 2")
            yield from super().epoch(epoch)

    monkeypatch.setattr(training, "ArrayBatches", KilledInEpoch2)
    with pytest.raises(Killed):
        _run(toy_data, out, settings, init_model=init_model)
    monkeypatch.undo()
    return load_torch(out / "checkpoint.pt")["state"]


def test_checkpoint_for_other_input_files_is_ignored(toy_data, tmp_path, monkeypatch):
    assert _killed_in_epoch2(toy_data, tmp_path, monkeypatch)["epoch"] == 1
    synthetic = toy_data / "synthetic.h5"
    synthetic.write_bytes(synthetic.read_bytes())  # regenerated upstream: same path, new file
    trained_epochs = []

    class Recording(training.ArrayBatches):
        def epoch(self, epoch):
            trained_epochs.append(epoch)
            yield from super().epoch(epoch)

    monkeypatch.setattr(training, "ArrayBatches", Recording)
    _run(toy_data, tmp_path)
    assert trained_epochs == [0, 1], "the stale checkpoint must not be resumed"


def test_stability_loss_is_ce_plus_beta_kl_clean_to_noisy():
    torch.manual_seed(0)
    logits, noisy, y = torch.randn(6, 4), torch.randn(6, 4), torch.randint(0, 4, (6,))
    p, q = torch.softmax(logits, 1), torch.softmax(noisy, 1)
    kl = (p * (p.log() - q.log())).sum(1)  # KL(f(x) || f(x + noise)), by hand
    expected = torch.nn.functional.cross_entropy(logits, y, reduction="none") + 6.0 * kl
    assert torch.allclose(ce_plus_kl(logits, noisy, y, beta=6.0), expected, atol=1e-6)
    same = ce_plus_kl(logits, logits, y, beta=6.0)
    assert torch.allclose(same, torch.nn.functional.cross_entropy(logits, y, reduction="none"), atol=1e-6)


def test_weighted_halves_weights_real_and_synthetic_means():
    per_sample = torch.tensor([1.0, 3.0, 10.0, 20.0])
    loss, real, syn = training.weighted_halves(per_sample, n_real=2, gamma=0.25)
    assert real.item() == 2.0 and syn.item() == 15.0 and loss.item() == pytest.approx(0.25 * 2 + 0.75 * 15)


def test_smoothing_training_runs_with_noise_validation(toy_data, tmp_path):
    settings = {**SETTINGS, "epochs": 1, "threat": None, "smoothing": {"sigma": 0.25, "beta": 6.0}}
    _run(toy_data, tmp_path, settings)
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["val_robust_acc"].between(0, 1).all() and np.isfinite(history["loss_synthetic"]).all()


# --- several processes (DDP) --------------------------------------------------------------------
# Two gloo processes on the CPU (PORT_CPU_PROCESSES, the GPU path's stand-in) must train what one
# process trains, up to floating-point order. The MLP has no BatchNorm: BatchNorm statistics are
# synchronised over processes only on CUDA (SyncBatchNorm does not run on the CPU), so a CNN's
# processes would normalise with their own rows' statistics there and legitimately differ.

DDP_SETTINGS = {**SETTINGS, "arch": "mlp", "epochs": 3, "lr": 0.2, "model_selection": "best",
                "crop_padding": 1, "flip": True, "augment_synthetic": True}
HISTORY = ["epoch", "lr", "loss_real", "loss_synthetic", "train_acc", "val_clean_acc", "val_robust_acc"]


def test_rank_rows_take_the_same_slice_of_both_halves():
    assert training.rank_rows([4, 4], 0, 2).tolist() == [0, 1, 4, 5]
    assert training.rank_rows([4, 4], 1, 2).tolist() == [2, 3, 6, 7]
    assert training.rank_rows([6], 2, 3).tolist() == [4, 5]
    assert training.rank_rows([4, 4], 0, 1).tolist() == list(range(8))
    assert training.rank_rows([2, 6], 1, 2).tolist() == [1, 5, 6, 7]  # synthetic_fraction 0.75


def _assert_same_run(a, b):
    """Equal weights up to float32 rounding, and the same history."""
    wa, wb = _weights(a / "model.pt"), _weights(b / "model.pt")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(pd.read_csv(a / "history.csv")[HISTORY], pd.read_csv(b / "history.csv")[HISTORY],
                                  rtol=1e-5)


def test_two_processes_train_the_single_process_model(toy_data, tmp_path, monkeypatch):
    one = _run(toy_data, tmp_path / "one", DDP_SETTINGS)
    monkeypatch.setenv("PORT_CPU_PROCESSES", "2")
    two = _run(toy_data, tmp_path / "two", DDP_SETTINGS)
    assert one["best_epoch"] == two["best_epoch"] == 1  # selection picks an early epoch, not the last
    assert one["val_score"] == two["val_score"]
    _assert_same_run(tmp_path / "one", tmp_path / "two")
    history = pd.read_csv(tmp_path / "two" / "history.csv")
    assert history["val_clean_acc"].nunique() > 1  # the model moves: equality is not trivial
    assert not (tmp_path / "two" / "checkpoint.pt").exists()


def test_stability_training_resumed_by_two_processes(toy_data, tmp_path, monkeypatch):
    settings = {**DDP_SETTINGS, "threat": None, "smoothing": {"sigma": 0.25, "beta": 6.0}}
    _run(toy_data, tmp_path / "straight", settings)
    saved = _killed_in_epoch2(toy_data, tmp_path / "resumed", monkeypatch, settings)
    assert saved["epoch"] == 1
    monkeypatch.setenv("PORT_CPU_PROCESSES", "2")  # e.g. requeued onto a node with two GPUs
    _run(toy_data, tmp_path / "resumed", settings)
    _assert_same_run(tmp_path / "straight", tmp_path / "resumed")
    # epoch 1 came from the checkpoint (its recorded time), not from training it again
    assert pd.read_csv(tmp_path / "resumed" / "history.csv")["epoch_seconds"][0] == saved["history"][0]["epoch_seconds"]


def test_batch_size_must_split_over_the_processes(toy_data, tmp_path, monkeypatch):
    monkeypatch.setenv("PORT_CPU_PROCESSES", "3")
    with pytest.raises(SettingsError, match="batch_size 32 does not split over 3 training processes"):
        _run(toy_data, tmp_path, DDP_SETTINGS)
    assert not list(tmp_path.iterdir())


def _scripted_validation(monkeypatch, robust_scores):
    """Validation that reports `robust_scores` epoch by epoch (the model's real accuracy aside)."""
    scores = iter(robust_scores)
    monkeypatch.setattr(training, "validate", lambda *args: dict(val_clean_acc=1.0, val_robust_acc=next(scores)))


@pytest.mark.parametrize("warmup, expected_epochs", [(0, 4), (3.5, 6)])
def test_patience_stops_training_epochs_after_the_best_validation_score(toy_data, tmp_path, monkeypatch, warmup,
                                                                        expected_epochs):
    """Best at epoch 2, patience 2: the run stops after epoch 4, or 2 epochs after the eps warm-up
    (3.5 epochs) is over; the best epoch's weights are kept and the epochs reached are recorded."""
    _scripted_validation(monkeypatch, [0.5, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6])
    settings = {**SETTINGS, "epochs": 8, "patience": 2, "model_selection": "best", "eps_warmup_epochs": warmup}
    summary = _run(toy_data, tmp_path, settings)
    assert (summary["epochs_run"], summary["best_epoch"], summary["epochs"]) == (expected_epochs, 2, 8)
    assert len(pd.read_csv(tmp_path / "history.csv")) == expected_epochs
    assert load_model(tmp_path / "model.pt")[1]["metadata"]["epochs_run"] == expected_epochs


def test_without_patience_every_epoch_trains(toy_data, tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, [0.7, 0.5, 0.5])
    assert _run(toy_data, tmp_path, {**SETTINGS, "epochs": 3})["epochs_run"] == 3


def test_a_run_resumed_after_patience_ran_out_stops_where_it_would_have(toy_data, tmp_path, monkeypatch):
    """A job killed after its last epoch but before it saved the model stops again at once."""
    settings = {**SETTINGS, "epochs": 8, "patience": 1, "model_selection": "best"}
    _scripted_validation(monkeypatch, [0.7, 0.5, 0.5])
    monkeypatch.setattr(training, "save_model", lambda *args, **kwargs: (_ for _ in ()).throw(Killed("killed")))
    with pytest.raises(Killed):
        _run(toy_data, tmp_path, settings)
    monkeypatch.undo()
    assert load_torch(tmp_path / "checkpoint.pt")["state"]["epoch"] == 2
    _scripted_validation(monkeypatch, [])  # validating again would raise StopIteration
    assert _run(toy_data, tmp_path, settings)["epochs_run"] == 2


def test_the_validation_set_takes_the_labelled_images_it_is_given(toy_data, tmp_path, monkeypatch):
    """A discriminator validates on its real split plus as many synthetic images (label 1)."""
    seen = []
    real_validate = training.validate
    monkeypatch.setattr(training, "validate", lambda model, x, y, *rest: seen.append(y.clone())
                        or real_validate(model, x, y, *rest))
    extra = np.full(20, 3, np.int64)
    write_images(tmp_path / "val.h5", np.zeros((20, 8, 8, 1), np.uint8), provenance("x", {}), labels=extra)
    train(train_path=toy_data / "train.h5", model_out=tmp_path / "model.pt", history_out=tmp_path / "history.csv",
          checkpoint_path=None, settings={**SETTINGS, "epochs": 1}, seed=0, synthetic_path=toy_data / "synthetic.h5",
          val_synthetic_path=tmp_path / "val.h5", progress=False)
    n_real = validation_count(200, SETTINGS["val_fraction"])
    assert len(seen[0]) == n_real + 20 and (seen[0][n_real:] == 3).all()


def test_min_steps_adds_whole_epochs_and_stretches_the_eps_warmup(toy_data, tmp_path, monkeypatch):
    """180 training images in batches of 32: 5 steps an epoch. min_steps 18 turns 2 epochs into 4
    (20 steps), and the 1-epoch eps warm-up into 2 epochs: its share of the run stays a half."""
    fractions = []
    step = training.TrainStep.__call__
    monkeypatch.setattr(training.TrainStep, "__call__",
                        lambda self, *args, eps_fraction=1.0, **kw: fractions.append(eps_fraction) or
                        step(self, *args, eps_fraction=eps_fraction, **kw))
    summary = _run(toy_data, tmp_path, {**SETTINGS, "eps_warmup_epochs": 1, "min_steps": 18}, synthetic=False)
    assert (summary["epochs"], summary["steps"]) == (4, 20) and len(fractions) == 20
    assert len(pd.read_csv(tmp_path / "history.csv")) == 4
    assert fractions[5] == pytest.approx(0.5) and fractions.index(1.0) == 10
    again = _run(toy_data, tmp_path / "short", {**SETTINGS, "min_steps": 7}, synthetic=False)  # 2 epochs: 10 >= 7
    assert (again["epochs"], again["steps"]) == (2, 10)
