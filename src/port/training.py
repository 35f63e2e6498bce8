"""PORT training: adversarial, stability (for randomized smoothing) or standard training on
real and synthetic batches mixed 1:1 (or at `synthetic_fraction`).

loss = gamma * L(real half) + (1 - gamma) * L(synthetic half), as the paper states it (the
official code's concatenation amounts to gamma = 0.5). L is cross-entropy on PGD examples,
TRADES, or CE + beta * KL(f(x) || f(x + noise)) for smoothing (the paper's stability training).
SGD with momentum, cosine learning rate per step, weight decay. The recipe options of Wang et
al. (2023) (TRADES, weight averaging, label smoothing, warm-up, ...) live in port.recipe.
Model selection uses a held-out split of the real training images, never the test set; with
`patience`, training stops once that split's score has not improved for so many epochs (how long a
robust discriminator needs depends on a margin nobody knows in advance). A
checkpoint is written atomically after every epoch; a rerun with the same settings resumes
from it and gives the same final model.
With several GPUs, one process per GPU trains on its share of every global batch (DDP, see
port.distributed) and reaches the single-process model up to floating-point order.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed
from .artifacts import ResumeCheckpoint, load_torch, read_attrs, read_image_set, validate_image_set, write_csv
from .attacks import Attack, batchnorm_mode, random_start
from .compute import Compute, channels_last
from .data import validation_split
from .devices import default_device
from .errors import SettingsError, TrainingDiverged
from .evaluation import accuracy
from .loaders import ArrayBatches, ChunkShuffleStream, augment, to_tensor
from .models import build_model, load_initial_weights, model_spec, save_model
from .recipe import WeightAverage, ce_plus_kl, lr_factor, parameter_groups, trades_attack, trades_start
from .seeds import derive_seed
from .settings.training import TrainSettings

log = logging.getLogger(__name__)
# Reading the losses back makes the host wait for the GPU, so the loop does it every this many
# steps, not every step: a diverged run still stops within a few seconds of GPU time.
LOSS_READBACK_STEPS = 50


def mix_batches(x_real, y_real, x_syn=None, y_syn=None, n_synthetic: int | None = None):
    """One training batch: the real part first, then the synthetic part, of `n_synthetic`
    images (default as many as real ones: PORT's 1:1)."""
    if x_syn is None:
        return x_real, y_real, len(x_real)
    expected = len(x_real) if n_synthetic is None else n_synthetic
    if len(x_syn) != expected:
        raise ValueError(f"expected {expected} synthetic images next to {len(x_real)} real ones, got {len(x_syn)}")
    return torch.cat([x_real, x_syn]), torch.cat([y_real, y_syn]), len(x_real)


def weighted_halves(per_sample: torch.Tensor, n_real: int, gamma: float):
    """(gamma * mean(real half) + (1 - gamma) * mean(synthetic half), real mean, synthetic mean);
    the plain mean when there is no synthetic half."""
    loss_real = per_sample[:n_real].mean()
    if n_real == len(per_sample):
        return loss_real, loss_real, per_sample.new_zeros(())
    loss_syn = per_sample[n_real:].mean()
    return gamma * loss_real + (1.0 - gamma) * loss_syn, loss_real, loss_syn


def port_loss(logits, y, n_real: int, gamma: float, label_smoothing: float = 0.0):
    """gamma * CE(real) + (1 - gamma) * CE(synthetic); plain CE when there is no synthetic half."""
    per_sample = F.cross_entropy(logits, y, reduction="none", label_smoothing=label_smoothing)
    return weighted_halves(per_sample, n_real, gamma)


def rank_rows(block_sizes: list[int], rank: int, world: int) -> torch.Tensor:
    """This rank's rows of a global batch made of blocks (real, then synthetic) of the given
    sizes: the same contiguous share of each block, so every rank mixes real and synthetic
    images as the global batch does and the mean of the ranks' gamma-weighted losses (what
    DDP's gradient averaging takes) is the global one."""
    rows, offset = [], 0
    for size in block_sizes:
        share = size // world
        rows.append(torch.arange(share) + offset + rank * share)
        offset += size
    return torch.cat(rows)


class TrainStep:
    """One optimiser step on a mixed batch: craft the attack (PGD or TRADES) or add the smoothing
    noise, then the gamma-weighted loss, backward and update, under the run's `compute` block.

    Returns this rank's [loss, loss_real, loss_syn, correct] as a tensor on the device, without
    waiting for it: reading it back (a host sync) is the caller's choice. `forward` is the module
    the loss goes through (DDP's wrapper when there are several processes); attacks use the bare model.
    """

    def __init__(self, model, optimizer, cfg: TrainSettings, forward=None):
        self.model, self.optimizer, self.cfg = model, optimizer, cfg
        self.compute = Compute.from_settings(cfg.compute)
        self.attack = Attack.from_settings(cfg.threat, self.compute)
        self.attack_net = self.compute.compiled(model)
        self.train_net = self.attack_net if forward is None or forward is model else self.compute.compiled(forward)

    def __call__(self, x, y, n_real: int, start=None, noise=None, eps_fraction: float = 1.0) -> torch.Tensor:
        """`eps_fraction` scales the attack's eps and step size for this step (the eps warm-up)."""
        cfg, net = self.cfg, self.train_net
        attack = self.attack if self.attack is None or eps_fraction >= 1.0 else self.attack.scaled(eps_fraction)
        x = channels_last(x)
        # One autocast region from the attack to the loss: the weights are cast to bf16 once per step.
        with self.compute.autocast(x.device):
            if attack is not None and cfg.loss == "trades":
                with batchnorm_mode(self.model, cfg.attack_batchnorm):
                    x_adv = trades_attack(self.attack_net, x, attack, start)
                logits = net(x)
                per_sample = ce_plus_kl(logits, net(x_adv), y, cfg.trades_beta, cfg.label_smoothing)
                loss, loss_real, loss_syn = weighted_halves(per_sample, n_real, cfg.gamma)
            else:
                if attack is not None:
                    with batchnorm_mode(self.model, cfg.attack_batchnorm):
                        x = attack(self.attack_net, x, y, start=start)
                logits = net(x)
                if cfg.smoothing:  # stability training: CE + beta * KL(f(x) || f(x + noise))
                    per_sample = ce_plus_kl(logits, net(x + noise), y, cfg.smoothing["beta"], cfg.label_smoothing)
                    loss, loss_real, loss_syn = weighted_halves(per_sample, n_real, cfg.gamma)
                else:
                    loss, loss_real, loss_syn = port_loss(logits, y, n_real, cfg.gamma, cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the ranks' gradients: the global batch's gradient
        self.optimizer.step()
        correct = (logits.argmax(1) == y).sum().to(loss.dtype)
        return torch.stack([loss, loss_real, loss_syn, correct]).detach().float()


def removed_test_duplicates(synthetic_path) -> int | None:
    """How many near-duplicates of test images the selection left out of the synthetic set (0
    without one; None for a set that does not say, one not written by port.selection)."""
    if synthetic_path is None:
        return 0
    removed = read_attrs(synthetic_path).get("test_duplicates_removed")
    return None if removed is None else int(removed)


def validate(model, x_val, y_val, attack, cfg: TrainSettings, seed: int) -> dict:
    """Clean and robust accuracy on the held-out split (robust: PGD, or one smoothing-noise draw)."""
    model.eval()
    val_clean = accuracy(model, x_val, y_val)
    if attack is not None:
        val_robust = accuracy(model, x_val, y_val, attack=attack, attack_steps=cfg.val_attack_steps)
    elif cfg.smoothing:  # accuracy under one draw of the smoothing noise: a cheap proxy
        noise = torch.randn(x_val.shape, generator=torch.Generator().manual_seed(seed)).to(x_val.device)
        val_robust = accuracy(model, x_val + noise * cfg.smoothing["sigma"], y_val)
    else:
        val_robust = float("nan")
    return dict(val_clean_acc=val_clean, val_robust_acc=val_robust)


def train(*, train_path, model_out, history_out, checkpoint_path, settings: dict, seed: int,
          synthetic_path=None, init_model=None, val_synthetic_path=None, progress: bool = True,
          settings_key: str = "the trainer settings") -> dict:
    """Train one classifier on all the GPUs the job was given, one process each (see
    port.distributed), or in this process with one GPU or none; returns a summary (train
    seconds, best epoch, val accuracies). The result is the same up to floating-point order.
    `init_model`: a saved model of the same spec to start from instead of random weights (the
    discriminator curriculum). `val_synthetic_path`: labelled images added to the validation split
    (a discriminator's synthetic half, never trained on). `settings_key` names the config block of `settings` in error messages."""
    cfg, processes = TrainSettings.from_dict(settings), distributed.processes()
    parts = {"batch_size": cfg.batch_size}
    if synthetic_path is not None:
        parts["synthetic images per batch (synthetic_fraction)"] = cfg.synthetic_batch_size
    for name, size in parts.items():
        if size % max(processes, 1):
            raise SettingsError(f"{name} {size} does not split over {processes} training processes (one per GPU): "
                                f"use a multiple of {processes}, or give the job a number of GPUs that divides it")
    summary = distributed.launch(_train, train_path, model_out, history_out, checkpoint_path, settings, seed,
                                 synthetic_path, init_model, val_synthetic_path, progress, settings_key)
    return summary if summary is not None else load_torch(model_out)["metadata"]


def mixture_record(synthetic_path) -> dict:
    """The mixture a synthetic set was merged from and its members' image counts (port.mixture),
    for the run tables; {} for one generator's selection."""
    attrs = read_attrs(synthetic_path)
    return {key: str(attrs[key]) for key in ("generator", "generator_shares") if "generator_shares" in attrs}


def _train(train_path, model_out, history_out, checkpoint_path, settings: dict, seed: int, synthetic_path,
           init_model, val_synthetic_path, progress: bool, settings_key: str) -> dict:
    """One training process: every rank sees every global batch and trains on its rows; rank 0
    validates and writes the checkpoint, history and model."""
    cfg = TrainSettings.from_dict(settings)
    rank, world = distributed.rank(), distributed.world_size()
    attack = Attack.from_settings(cfg.threat)
    attrs = read_attrs(train_path)
    num_classes = int(attrs["num_classes"])
    images, labels = read_image_set(train_path, num_classes)
    train_idx, val_idx = validation_split(len(images), cfg.val_fraction, seed)
    if len(train_idx) < cfg.batch_size:  # a default batch_size against a small set: name the key
        raise SettingsError(f"{settings_key}.batch_size={cfg.batch_size}: {train_path} leaves {len(train_idx)} "
                            f"training images after the val_fraction={cfg.val_fraction} hold-out, fewer than one batch")
    device = default_device()
    real = ArrayBatches(images[train_idx], labels[train_idx], cfg.batch_size, derive_seed(seed, "real"), device)
    if cfg.min_steps > cfg.epochs * len(real):  # the warm-ups keep their share of the longer run
        epochs = -(-cfg.min_steps // len(real))
        cfg = replace(cfg, epochs=epochs, eps_warmup_epochs=cfg.eps_warmup_epochs * epochs / cfg.epochs,
                      warmup_epochs=round(cfg.warmup_epochs * epochs / cfg.epochs))
    synthetic = None
    if synthetic_path is not None:
        validate_image_set(synthetic_path, num_classes, image_shape=images.shape[1:])
        # the stream runs on across epochs: a large selected set is covered, not restarted every epoch
        synthetic = ChunkShuffleStream(synthetic_path, cfg.synthetic_batch_size, derive_seed(seed, "syn"),
                                       cfg.buffer_chunks, steps_per_epoch=len(real), pin_memory=device.type == "cuda")
    val_images, val_labels = images[val_idx], labels[val_idx]
    if val_synthetic_path is not None:
        validate_image_set(val_synthetic_path, num_classes, image_shape=images.shape[1:])
        extra_images, extra_labels = read_image_set(val_synthetic_path, num_classes)
        val_images, val_labels = np.concatenate([val_images, extra_images]), np.concatenate([val_labels, extra_labels])
    x_val, y_val = to_tensor(val_images).to(device), torch.from_numpy(val_labels).to(device)
    blocks = [cfg.batch_size] if synthetic is None else [cfg.batch_size, cfg.synthetic_batch_size]
    rows = rank_rows(blocks, rank, world).to(device)

    spec = model_spec(cfg.arch, images.shape[-1], num_classes, images.shape[1],
                      attrs["channel_mean"], attrs["channel_std"])
    torch.manual_seed(derive_seed(seed, "init"))
    model = build_model(**spec)
    if init_model is not None:
        load_initial_weights(model, spec, init_model)
    model.to(device)
    if world > 1 and device.type == "cuda":
        # BatchNorm statistics over the global batch, as in one process. SyncBatchNorm needs CUDA:
        # processes on the CPU (the tests' gloo path) normalise with their own rows' statistics.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.SGD(parameter_groups(model, cfg.weight_decay, cfg.weight_decay_bn), lr=cfg.lr,
                                momentum=cfg.momentum, nesterov=cfg.nesterov)
    total_steps, warmup_steps = cfg.epochs * len(real), cfg.warmup_epochs * len(real)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup_steps))
    # With weight averaging, validation, model selection and the saved model use the average.
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    evaluated = model if average is None else average.model

    checkpoint = ResumeCheckpoint(checkpoint_path, settings, seed, (train_path, synthetic_path, init_model, val_synthetic_path))
    state = {"epoch": 0, "history": [], "best_score": -1.0, "best_state": None, "seconds": 0.0}
    if (saved := checkpoint.load()) is not None:
        for part, module in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler)):
            module.load_state_dict(saved.pop(part))
        if average is not None:
            average.load_state_dict(saved.pop("ema"))
        state = saved
        log.info("resumed after epoch %d", state["epoch"])

    # Attacks run on the bare model: their gradients are for the inputs, not for DDP to reduce.
    ddp = model if world == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None)
    train_step = TrainStep(model, optimizer, cfg, forward=ddp)
    for epoch in range(state["epoch"], cfg.epochs):
        # the patience clock starts at the best epoch, and not before the eps warm-up is over
        if cfg.patience and epoch - max(state.get("best_epoch", 0), cfg.eps_warmup_epochs) >= cfg.patience:
            log.info("stopping after epoch %d: no better validation score since epoch %d", epoch, state["best_epoch"])
            break
        started = time.time()
        torch.manual_seed(derive_seed(seed, "epoch", epoch))
        aug_gen = torch.Generator().manual_seed(derive_seed(seed, "augment", epoch))
        syn_batches = synthetic.epoch(epoch) if synthetic is not None else None
        totals = np.zeros(4)  # loss_real, loss_syn, correct, seen (means over ranks)
        pending = torch.zeros(4, device=device)  # this rank's step stats since the last read-back
        model.train()
        bar = tqdm(real.epoch(epoch), total=len(real), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress or rank > 0, mininterval=5)
        for step, (xr_uint8, yr) in enumerate(bar):
            eps_fraction = cfg.eps_fraction(epoch + step / len(real))  # the eps warm-up, step by step
            xr = augment(to_tensor(xr_uint8), aug_gen, cfg.crop_padding, cfg.flip)
            xs = ys = None
            if syn_batches is not None:
                xs_np, ys_np = next(syn_batches)
                xs = to_tensor(torch.from_numpy(xs_np).to(device, non_blocking=True))
                ys = torch.from_numpy(ys_np).to(device, non_blocking=True)
                if cfg.augment_synthetic:
                    xs = augment(xs, aug_gen, cfg.crop_padding, cfg.flip)
            x, y, n_real = mix_batches(xr, yr, xs, ys, cfg.synthetic_batch_size)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            # Randomness is drawn for the global batch on every rank, then sliced: one process's numbers.
            start = None
            if attack is not None:
                start = trades_start(x) if cfg.loss == "trades" else random_start(x, attack.norm, attack.eps * eps_fraction)
            noise = torch.randn_like(x) * cfg.smoothing["sigma"] if cfg.smoothing else None
            if world > 1:
                x, y, start, noise = (t if t is None else t[rows] for t in (x, y, start, noise))
                n_real //= world
            pending += train_step(x, y, n_real, start=start, noise=noise, eps_fraction=eps_fraction)
            scheduler.step()
            if average is not None:
                average.update(model)
            totals[3] += len(y)
            if (step + 1) % LOSS_READBACK_STEPS == 0 or step + 1 == len(real):
                sums = distributed.mean_over_ranks(pending).tolist()  # every rank sees it: all stop together
                if not math.isfinite(sums[0]):
                    raise TrainingDiverged(f"training diverged at epoch {epoch + 1} (by step {step + 1}): "
                                        f"loss is {sums[0]}")
                totals[:3] += sums[1:]
                pending.zero_()
        if syn_batches is not None:
            syn_batches.close()  # releases the HDF5 handle now, not at garbage collection
        train_seconds = time.time() - started

        # Rank 0 validates while the others wait; all record its numbers, so all select alike.
        entry = None
        if rank == 0:
            entry = dict(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"], loss_real=float(totals[0] / len(real)),
                         loss_synthetic=float(totals[1] / len(real)) if synthetic is not None else float("nan"),
                         train_acc=float(totals[2] / totals[3]), **validate(evaluated, x_val, y_val, attack, cfg, seed),
                         epoch_seconds=train_seconds)
        entry = distributed.from_rank0(entry)
        score = entry["val_clean_acc"] if np.isnan(entry["val_robust_acc"]) else entry["val_robust_acc"]
        state["seconds"] += entry["epoch_seconds"]
        state["history"].append(entry)
        log.info("epoch %d: %s", epoch + 1, entry)
        if score > state["best_score"]:
            state["best_score"], state["best_epoch"] = score, epoch + 1
            state["best_state"] = {k: v.clone() for k, v in evaluated.state_dict().items()}
        state["epoch"] = epoch + 1
        if rank == 0:
            checkpoint.save({**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(),
                             **({} if average is None else {"ema": average.state_dict()})})

    if cfg.model_selection == "best" and state["best_state"] is not None:
        evaluated.load_state_dict(state["best_state"])
    summary = dict(train_seconds=state["seconds"], epochs=cfg.epochs, epochs_run=state["epoch"],
                   steps=state["epoch"] * len(real), gamma=cfg.gamma,
                   best_epoch=state.get("best_epoch", cfg.epochs),
                   n_synthetic=synthetic.length if synthetic is not None else 0,
                   n_synthetic_used=synthetic.images_used(state["epoch"] * len(real)) if synthetic is not None else 0,
                   test_duplicates_removed=removed_test_duplicates(synthetic_path),
                   selected=cfg.model_selection, val_score=state["best_score"],
                   init_model=None if init_model is None else str(init_model),
                   **(mixture_record(synthetic_path) if synthetic_path is not None else {}))
    if rank == 0:
        save_model(evaluated, spec, model_out, **summary)
        write_csv(pd.DataFrame(state["history"]), history_out)
        checkpoint.finish()
    return summary
