"""``stainfuser train stainfuser``: fine-tune (or train) StainFuser on a triplet set."""

import argparse


def _cmd_train_stainfuser(args) -> int:
    from ..training.trainer import TrainConfig, train

    cfg = TrainConfig(
        data=args.data,
        out=args.out,
        init=args.init,
        config_dir=args.config_dir,
        from_scratch=args.from_scratch,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        size=args.size,
        mixed_magnification=args.mixed_magnification,
        precision=args.precision,
        device=args.device,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        max_grad_norm=args.max_grad_norm,
        gradient_checkpointing=args.gradient_checkpointing,
        num_workers=args.num_workers,
        resume=args.resume,
        progress=not args.no_progress,
    )
    final = train(cfg)
    print(f"final checkpoint: {final}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train`` (with its model subcommand ``stainfuser``) on the CLI."""
    train = subparsers.add_parser("train", help="train or fine-tune a model on a triplet set")
    models = train.add_subparsers(dest="model", metavar="MODEL", required=True)
    p = models.add_parser(
        "stainfuser",
        help="fine-tune StainFuser on (source, target, stylised) triplets",
        description=(
            "Fine-tune StainFuser with the published recipe: the ControlNet, the UNet decoder "
            "and both token projectors train; the VAE and the UNet encoder stay frozen; epsilon "
            "MSE on the stylised tile's latents; AdamW. DATA is a folder written by "
            "'stainfuser make-pairs' (manifest.csv) or holding source/, target/, stylised/ "
            "with matching file names. OUT receives loss.csv and checkpoints/step-N/."
        ),
    )
    p.add_argument("data", help="triplet folder (manifest.csv, or source/ target/ stylised/)")
    p.add_argument("-o", "--out", required=True, help="run folder (log and checkpoints)")
    init = p.add_mutually_exclusive_group()
    init.add_argument(
        "--init",
        help="checkpoint to start from (.safetensors, .pth or a checkpoint folder); "
        "default: $STAINFUSER_WEIGHTS or the local Hugging Face cache",
    )
    init.add_argument("--from-scratch", action="store_true", help="random weights from the configs")
    p.add_argument("--config-dir", help="folder with unet/vae/scheduler_config.json")
    p.add_argument("--steps", type=int, default=10_000, help="optimisation steps (10000)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per step (4)")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (1e-5)")
    p.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (1e-2)")
    p.add_argument("--size", type=int, default=512, help="training crop edge in px (512)")
    p.add_argument(
        "--mixed-magnification",
        action="store_true",
        help="half the samples use the whole tile downscaled 2x (tiles must be >= 2x size)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "fp16", "bf16"),
        help="mixed precision on CUDA (auto: bf16 if supported, else fp16; fp32 on CPU)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    p.add_argument(
        "--keep-checkpoints", type=int, default=2, help="newest checkpoints kept (0 keeps all)"
    )
    p.add_argument("--max-grad-norm", type=float, help="clip the gradient norm (off by default)")
    p.add_argument(
        "--gradient-checkpointing", action="store_true", help="trade compute for GPU memory"
    )
    p.add_argument("--num-workers", type=int, default=0, help="data-loading processes (0)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in OUT from its last checkpoint"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_stainfuser)
    _add_virtual_ihc(models)
    return train


def _add_virtual_ihc(models) -> None:
    p = models.add_parser(
        "virtual-ihc",
        help="train the virtual-IHC model (IHC + cell mask) on paired H&E/IHC tiles",
        description=(
            "Train the dual-task virtual-IHC model from scratch: one shared H&E encoder, one "
            "branch denoising the IHC and one the marker-positive cell mask, joint loss. PAIRS "
            "is a folder with he/NAME.png, ihc/NAME.png and optional mask/NAME.png ('stainfuser "
            "make-ihc-pairs' writes one; masks are made from the IHC when absent). Repeat "
            "--pairs/--marker to train one model on several markers. RUN receives loss.csv "
            "and checkpoints/step-N/."
        ),
    )
    p.add_argument("--pairs", action="append", required=True, help="pair folder (repeatable)")
    p.add_argument(
        "--marker", action="append", required=True, help="marker of each --pairs (repeatable)"
    )
    p.add_argument("-o", "--out", required=True, help="run folder (log and checkpoints)")
    p.add_argument("--config", default="tiny", choices=("tiny", "base"), help="model size (tiny)")
    p.add_argument("--tile", type=int, default=64, help="training crop edge, >= 64 (64)")
    p.add_argument("--steps", type=int, default=2000, help="optimisation steps (2000)")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per step (8)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (1e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (1e-2)")
    p.add_argument("--ihc-weight", type=float, default=1.0, help="IHC loss weight (1)")
    p.add_argument("--mask-weight", type=float, default=1.0, help="mask loss weight (1)")
    p.add_argument("--mpp", type=float, help="µm/px of the pairs, recorded in the checkpoint")
    p.add_argument(
        "--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
        help="mixed precision on CUDA (auto: bf16 if supported, else fp16; fp32 on CPU)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument(
        "--keep-checkpoints", type=int, default=2, help="newest checkpoints kept (0 keeps all)"
    )
    p.add_argument("--no-augment", action="store_true", help="no flips, rotations or jitter")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_virtual_ihc)


def _cmd_train_virtual_ihc(args) -> int:
    from ..training.ihc_train_config import IHCTrainConfig

    cfg = IHCTrainConfig(
        pairs=args.pairs, markers=args.marker, out=args.out, config=args.config, tile=args.tile,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, ihc_weight=args.ihc_weight,
        mask_weight=args.mask_weight, precision=args.precision, device=args.device,
        seed=args.seed, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, mpp=args.mpp, augment=not args.no_augment,
        resume=args.resume, progress=not args.no_progress,
    )  # fmt: skip
    cfg.validate()  # the flags first: torch is not loaded yet
    from ..training.ihc_trainer import train_virtual_ihc

    final = train_virtual_ihc(cfg)
    print(f"final checkpoint: {final}")
    return 0
