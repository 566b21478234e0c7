"""The StainFuser training loop: fine-tuning on a triplet set, resumable to the bit.

A run writes into one folder::

    OUT/train_config.json                  the settings (checked on --resume)
    OUT/loss.csv                           step,epoch,loss,lr,seconds per step
    OUT/checkpoints/step-00001000/         checkpoint.safetensors (official flat layout),
                                           unet/vae/scheduler_config.json and the same
                                           as sd21b_*_config.json (the official names),
                                           metadata.json,
                                           training_state.pt (optimizer, scaler, RNG)

Before anything is written, the triplets are checked from their image headers
(readable 8-bit images, stylised aligned with source, big enough for ``size``,
twice that with mixed magnification), the model is loaded and the first batch
is decoded; a refused start leaves no run folder behind.

A checkpoint folder is written as ``step-XXXXXXXX.partial`` and renamed when
complete, so a killed run never leaves a half checkpoint behind. ``resume``
reloads the newest complete one: weights, AdamW moments, the gradient
scaler, torch's RNG states and the step. Everything random in a step (which
triplets, which crops, the VAE posterior draws, the noise, the timesteps)
is drawn from generators seeded by (seed, step), so a resumed run takes
exactly the steps the uninterrupted run would have taken; on the CPU the
weights come out bit-identical.
"""

import collections
import contextlib
import csv
import dataclasses
import itertools
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..atomic import write_json_atomic
from ..devices import resolve_device
from ..diffusion.model import PRECISIONS
from ..errors import ParameterError
from .recipe import set_trainable, training_loss, training_scheduler
from .triplets import StepBatchSampler, TripletDataset, mix_seed

CONFIG_NAME = "train_config.json"
LOSS_LOG = "loss.csv"
LOSS_FIELDS = ("step", "epoch", "loss", "lr", "seconds")
STATE_NAME = "training_state.pt"

# Settings that may change between a run and its resumption.
_RESUMABLE_CHANGES = {
    "steps",
    "resume",
    "progress",
    "num_workers",
    "checkpoint_every",
    "keep_checkpoints",
}


@dataclass
class TrainConfig:
    """Settings of one training run (the CLI's flags, one to one)."""

    data: str
    out: str
    init: str | None = None  # checkpoint to fine-tune; None: weight lookup (env, HF cache)
    config_dir: str | None = None  # configs for `init` / `from_scratch`; None: next to weights
    from_scratch: bool = False  # random weights from the configs instead of `init`
    steps: int = 10_000
    batch_size: int = 4
    lr: float = 1e-5
    weight_decay: float = 1e-2
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    size: int = 512
    mixed_magnification: bool = False
    precision: str = "auto"  # fp32 | fp16 | bf16 | auto (bf16/fp16 on CUDA, fp32 on CPU)
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2  # newest checkpoints kept; 0 keeps all
    max_grad_norm: float | None = None
    gradient_checkpointing: bool = False
    num_workers: int = 0
    resume: bool = False
    progress: bool = True

    def validate(self) -> None:
        for name in ("steps", "batch_size", "size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ParameterError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.size % 8:
            raise ParameterError(f"size {self.size} is not divisible by 8 (the VAE's factor)")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ParameterError(
                f"lr must be > 0 and weight_decay >= 0 (got {self.lr}, {self.weight_decay})"
            )
        if self.precision not in (*PRECISIONS, "auto"):
            raise ParameterError(
                f"precision {self.precision!r} is not one of auto, {', '.join(PRECISIONS)}"
            )
        if self.keep_checkpoints < 0 or self.num_workers < 0:
            raise ParameterError("keep_checkpoints and num_workers must be >= 0")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ParameterError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")

    def settings(self) -> dict:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(d["adam_betas"])
        return d


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(name)


def _resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name != "fp32" and device.type != "cuda":
        raise ParameterError(f"precision {name!r} (mixed precision) needs CUDA; device is {device}")
    return name


def _checkpoint_dirs(out: Path) -> list[tuple[int, Path]]:
    found = []
    for p in (out / "checkpoints").glob("step-*"):
        if p.is_dir() and not p.name.endswith(".partial") and (p / STATE_NAME).is_file():
            try:
                found.append((int(p.name.split("-", 1)[1]), p))
            except ValueError:
                continue
    return sorted(found)


def latest_checkpoint(out) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    dirs = _checkpoint_dirs(Path(out))
    return dirs[-1][1] if dirs else None


class LossLog:
    """loss.csv, one row per step, flushed as it goes."""

    def __init__(self, path: Path, keep_until: int | None, fields=LOSS_FIELDS, recent: int = 0):
        """``recent``: how many of the newest rows to keep in memory as well (``rows``)."""
        self.path = path
        rows = []
        if keep_until is not None and path.is_file():
            # A killed run may have logged steps after its last checkpoint; the
            # resumed run takes them again, so drop them.
            with open(path, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= keep_until]
        tmp = path.with_name(path.name + ".partial")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fields)
            w.writeheader()
            w.writerows(rows)
        tmp.replace(path)
        self.rows = collections.deque(rows, maxlen=recent)
        # Held open for the whole run (one row per step); closed by close().
        self._fh = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.DictWriter(self._fh, fields)

    def write(self, **row) -> None:
        self._writer.writerow(row)
        self._fh.flush()
        self.rows.append(row)

    def close(self) -> None:
        self._fh.close()


def read_loss_log(out) -> list[dict]:
    """Rows of a run's loss.csv with numeric values."""
    with open(Path(out) / LOSS_LOG, newline="", encoding="utf-8") as fh:
        return [
            {
                "step": int(r["step"]),
                "epoch": int(r["epoch"]),
                "loss": float(r["loss"]),
                "lr": float(r["lr"]),
                "seconds": float(r["seconds"]),
            }
            for r in csv.DictReader(fh)
        ]


def _load_model(cfg: TrainConfig, device: torch.device, resume_from: Path | None):
    from ..diffusion import StainFuser
    from ..diffusion.checkpoint import WEIGHTS_NAME

    if resume_from is not None:
        return StainFuser.load(resume_from / WEIGHTS_NAME, config_dir=resume_from, device=device)
    if cfg.from_scratch:
        return StainFuser.from_configs(cfg.config_dir, device=device, init_seed=cfg.seed)
    return StainFuser.load(cfg.init, config_dir=cfg.config_dir, device=device)


def _check_resumable(out: Path, cfg, resumable=_RESUMABLE_CHANGES) -> None:
    """Refuse to resume ``out`` with settings other than ``resumable`` changed.

    ``cfg`` is any run's settings object with ``settings() -> dict`` (this
    loop's and the virtual-IHC loop's)."""
    path = out / CONFIG_NAME
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ParameterError(f"{path}: cannot read the run's settings ({exc})") from None
    now = cfg.settings()
    changed = sorted(k for k in now if k not in resumable and saved.get(k) != now[k])
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ParameterError(f"{out}: cannot resume with different settings ({detail})")


def _save(out, step, model, optimizer, scaler, meta, keep) -> Path:
    from ..diffusion import save_checkpoint

    return save_run_checkpoint(
        out, step, optimizer, scaler, keep,
        lambda folder: save_checkpoint(model, folder, {**meta, "steps": step}),
    )  # fmt: skip


def save_run_checkpoint(out, step, optimizer, scaler, keep, write_model) -> Path:
    """``out/checkpoints/step-N``: the optimizer, scaler and RNG states, plus what
    ``write_model(folder)`` writes; built as ``.partial`` and renamed when
    complete, keeping the newest ``keep`` (0: all)."""
    root = out / "checkpoints"
    final = root / f"step-{step:08d}"
    partial = root / f"step-{step:08d}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(state, partial / STATE_NAME)
    write_model(partial)
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    if keep:
        for _, old in _checkpoint_dirs(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def restore_run_state(checkpoint: Path, optimizer, scaler) -> int:
    """Load what :func:`save_run_checkpoint` saved into ``optimizer``, ``scaler``
    and torch's RNGs; return the step it was saved at."""
    state = torch.load(checkpoint / STATE_NAME, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])


def train(cfg: TrainConfig, callback=None) -> Path:
    """Run (or resume) training; return the folder of the final checkpoint.

    callback(step, loss) is called after every optimisation step.
    """
    cfg.validate()
    out = Path(cfg.out)
    device = _resolve_device(cfg.device)
    precision = _resolve_precision(cfg.precision, device)
    resume_from = None
    if cfg.resume:
        _check_resumable(out, cfg)
        resume_from = latest_checkpoint(out)
    elif (out / CONFIG_NAME).exists() or (out / LOSS_LOG).exists():
        raise ParameterError(
            f"{out} already holds a training run; pass --resume to continue it or choose a new folder"
        )
    # Every check that can fail runs before the run folder is touched, so a
    # refused start leaves nothing that a corrected re-run would trip over.
    dataset = TripletDataset(cfg.data, cfg.size, cfg.mixed_magnification)
    dataset.check()
    model = _load_model(cfg, device, resume_from)
    networks = model.networks
    trained = set_trainable(networks)
    if cfg.gradient_checkpointing:
        networks.conditioner.enable_gradient_checkpointing()
        networks.noise_predictor.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(
        [p for _, p in trained],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        betas=tuple(cfg.adam_betas),
        eps=cfg.adam_eps,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    start = 0 if resume_from is None else restore_run_state(resume_from, optimizer, scaler)
    if start >= cfg.steps:
        return resume_from
    scheduler = training_scheduler(model.configs.scheduler)
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start, cfg.steps)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
    batches = iter(loader)
    # The first batch is decoded before anything is written: a file that passed
    # the header check but does not decode stops the start, not the run.
    first = next(batches)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CONFIG_NAME, cfg.settings())
    log = LossLog(out / LOSS_LOG, keep_until=start)
    dtype = PRECISIONS[precision]

    def autocast():
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    meta = {
        "training": {
            "data": str(Path(cfg.data).resolve()),
            "triplets": len(dataset),
            "init": "random (from configs)" if cfg.from_scratch else str(cfg.init),
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "size": cfg.size,
            "magnification": "mixed: full-resolution crop or whole tile downscaled 2x"
            if cfg.mixed_magnification
            else "full resolution crops",
            "precision": precision,
            "seed": cfg.seed,
        }
    }
    n_trained = sum(p.numel() for _, p in trained)
    n_total = sum(p.numel() for p in networks.parameters())
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        disable=not cfg.progress,
        unit="step",
        desc=f"training {n_trained / 1e6:.1f}M of {n_total / 1e6:.1f}M parameters",
    )
    last = resume_from
    step = start
    try:
        for batch in itertools.chain([first], batches):
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(mix_seed(cfg.seed, step, 3))
            source = batch["source"].to(device).float() / 255.0
            target = batch["target"].to(device).float() / 255.0
            stylised = batch["stylised"].to(device).float() / 127.5 - 1.0
            loss = training_loss(networks, scheduler, source, target, stylised, gen, autocast)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} at step {step + 1}")
            scaler.scale(loss).backward()
            if cfg.max_grad_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_([p for _, p in trained], cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            epoch = sampler.epoch_of(step)
            step += 1
            log.write(
                step=step,
                epoch=epoch,
                loss=repr(value),
                lr=repr(cfg.lr),
                seconds=f"{time.perf_counter() - t0:.4f}",
            )
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", epoch=epoch)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                last = _save(out, step, model, optimizer, scaler, meta, cfg.keep_checkpoints)
            if callback is not None:
                callback(step, value)
    finally:
        bar.close()
        log.close()
    return last
