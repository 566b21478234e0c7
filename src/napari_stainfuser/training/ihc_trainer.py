"""Training the virtual-IHC model on paired tiles, resumable to the bit.

``stainfuser train virtual-ihc --pairs DIR --marker CD3 -o RUN/`` is
:func:`train_virtual_ihc`. Several ``--pairs``/``--marker`` couples train one
multi-marker model (the marker embedding; see
:mod:`napari_stainfuser.diffusion.ihc_networks`). A run folder holds::

    RUN/train_config.json                 the settings (checked on --resume)
    RUN/loss.csv                          step,epoch,loss,ihc_loss,mask_loss,lr,seconds
    RUN/checkpoints/step-00000500/        virtual-ihc.safetensors, virtual-ihc.json,
                                          training_state.pt (optimizer, scaler, RNG)

The loss is ``ihc_weight · MSE(IHC x0) + mask_weight · MSE(mask x0)``: each
branch predicts its clean image from its own noised copy at its own random
timestep, both from the same H&E encoding. Everything random in a step (the
tiles, crops, augmentation, timesteps, noise) comes from generators seeded by
(seed, step), and checkpoints carry the optimizer and RNG states, so a
resumed run takes exactly the steps the uninterrupted one would have taken;
on the CPU its weights come out bit-identical.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..atomic import write_json_atomic
from ..errors import ParameterError
from .ihc_train_config import IHCTrainConfig
from .trainer import (
    CONFIG_NAME,
    LOSS_LOG,
    LossLog,
    _check_resumable,
    _resolve_device,
    _resolve_precision,
    latest_checkpoint,
    restore_run_state,
    save_run_checkpoint,
)
from .triplets import StepBatchSampler, mix_seed

LOSS_FIELDS = ("step", "epoch", "loss", "ihc_loss", "mask_loss", "lr", "seconds")
_RESUMABLE_CHANGES = {"steps", "resume", "progress", "checkpoint_every", "keep_checkpoints"}


def read_loss_log(out) -> list[dict]:
    with open(Path(out) / LOSS_LOG, newline="", encoding="utf-8") as fh:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def noised(x0, scheduler, gen, device):
    """(noisy, t): ``x0`` noised at one random timestep per sample (DDPM forward process)."""
    b = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen).to(device)
    eps = torch.randn(x0.shape, generator=gen).to(device)
    return scheduler.add_noise(x0, eps, t), t


def joint_loss(networks, scheduler, batch, gen, device, weights, autocast):
    he = batch["he"].to(device).float() / 127.5 - 1
    target = {
        "ihc": batch["ihc"].to(device).float() / 127.5 - 1,
        "mask": batch["mask"].to(device).float() * 2 - 1,
    }
    marker = batch["marker"].to(device)
    with autocast():
        feats = networks.encode(he)
        ctx = networks.contexts(feats)
        losses = {}
        for name, x0 in target.items():
            noisy, t = noised(x0, scheduler, gen, device)
            pred = networks.branch(name)(noisy, t, feats, ctx[name], marker)
            losses[name] = torch.nn.functional.mse_loss(pred.float(), x0)
    total = weights["ihc"] * losses["ihc"] + weights["mask"] * losses["mask"]
    return total, losses


LOSS_WINDOW = 50  # steps whose mean losses a checkpoint records


def _recent_losses(log: LossLog) -> dict:
    """Mean losses of the last LOSS_WINDOW logged steps. The log holds the rows a
    resumed run kept from loss.csv, so it records what the uninterrupted run would."""
    keys = ("step", "loss", "ihc_loss", "mask_loss")
    rows = []
    for r in log.rows:
        try:  # a row a killed run left half-written is not a loss
            rows.append({k: float(r[k]) for k in keys})
        except (KeyError, TypeError, ValueError):
            continue
    return {
        "steps": [int(rows[0]["step"]), int(rows[-1]["step"])],
        **{k: sum(r[k] for r in rows) / len(rows) for k in keys[1:]},
    }


def _save(out, step, networks, optimizer, scaler, meta, keep, log) -> Path:
    from ..diffusion.virtual_ihc import save_checkpoint

    training = {"training": {**meta["training"], "steps": step,
                             "losses": _recent_losses(log)}}  # fmt: skip
    return save_run_checkpoint(
        out,
        step,
        optimizer,
        scaler,
        keep,
        lambda folder: save_checkpoint(networks, folder, training),
    )


def _dataset(cfg: IHCTrainConfig):
    from .ihc_data import PairDataset, find_pairs

    pairs = []
    for folder, marker in zip(cfg.pairs, cfg.markers, strict=True):
        pairs += find_pairs(folder, marker, min_size=cfg.tile)
    markers = list(dict.fromkeys(cfg.markers))
    return PairDataset(pairs, markers, cfg.tile, cfg.augment, cfg.mask_params), markers


def train_virtual_ihc(cfg: IHCTrainConfig, callback=None, budget_s: float | None = None) -> Path:
    """Run (or resume) training; return the final checkpoint folder.

    callback(step, losses) is called after every step; ``budget_s`` stops at
    the first checkpoint-worthy moment after that many seconds (the demo's
    fixed budget), saving a checkpoint there.
    """
    from ..diffusion.ihc_networks import build, preset
    from ..diffusion.virtual_ihc import load_networks

    cfg.validate()
    out = Path(cfg.out)
    device = _resolve_device(cfg.device)
    precision = _resolve_precision(cfg.precision, device)
    resume_from = None
    if cfg.resume:
        _check_resumable(out, cfg, _RESUMABLE_CHANGES)
        resume_from = latest_checkpoint(out)
    elif (out / CONFIG_NAME).exists():
        raise ParameterError(
            f"{out} already holds a training run; pass --resume to continue it or choose a new folder"
        )
    dataset, markers = _dataset(cfg)
    if resume_from is not None:
        networks, _ = load_networks(resume_from, device)
        networks.train()
    else:
        networks = build(preset(cfg.config, markers, cfg.tile, cfg.mpp), cfg.seed).to(device)
    optimizer = torch.optim.AdamW(networks.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    start = 0 if resume_from is None else restore_run_state(resume_from, optimizer, scaler)
    if start >= cfg.steps:
        return resume_from
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(networks.config.scheduler_config())
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start, cfg.steps)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0)
    batches = iter(loader)
    first = next(batches)  # a pair that does not decode stops the start, not the run
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CONFIG_NAME, cfg.settings())
    log = LossLog(out / LOSS_LOG, keep_until=start, fields=LOSS_FIELDS, recent=LOSS_WINDOW)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    meta = {
        "training": {
            "data": [str(Path(p).resolve()) for p in cfg.pairs],
            "markers": markers,
            "pairs": len(dataset),
            "config": cfg.config,
            "tile": cfg.tile,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "loss_weights": {"ihc": cfg.ihc_weight, "mask": cfg.mask_weight},
            "precision": precision,
            "seed": cfg.seed,
        }
    }
    weights = {"ihc": cfg.ihc_weight, "mask": cfg.mask_weight}
    n_params = sum(p.numel() for p in networks.parameters())
    desc = f"virtual IHC ({cfg.config}, {n_params / 1e6:.1f}M parameters)"
    if budget_s is not None:  # the budget, not the step count, ends this run
        desc += f", {budget_s:.0f} s budget"
    bar = tqdm(total=cfg.steps if budget_s is None else None, initial=start, unit="step",
               disable=not cfg.progress, desc=desc)  # fmt: skip
    last, step, began = resume_from, start, time.perf_counter()
    networks.train()
    try:
        for batch in itertools.chain([first], batches):
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(mix_seed(cfg.seed, step, 3))
            loss, parts = joint_loss(networks, scheduler, batch, gen, device, weights, autocast)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} at step {step + 1}")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            values = {k: float(v.detach()) for k, v in parts.items()}
            log.write(
                step=step, epoch=sampler.epoch_of(step - 1), loss=repr(float(loss.detach())),
                ihc_loss=repr(values["ihc"]), mask_loss=repr(values["mask"]), lr=repr(cfg.lr),
                seconds=f"{time.perf_counter() - t0:.4f}",
            )  # fmt: skip
            bar.update(1)
            bar.set_postfix(ihc=f"{values['ihc']:.4f}", mask=f"{values['mask']:.4f}")
            over = budget_s is not None and time.perf_counter() - began > budget_s
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or over:
                last = _save(
                    out, step, networks, optimizer, scaler, meta, cfg.keep_checkpoints, log
                )
            if callback is not None:
                callback(step, values)
            if over:
                break
    finally:
        bar.close()
        log.close()
    return last
