"""The `train stainfuser` and `make-pairs` subcommands, parsed and run in-process."""

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from napari_stainfuser.cli import make_pairs as make_pairs_cli
from napari_stainfuser.cli import train as train_cli
from napari_stainfuser.errors import ParameterError
from napari_stainfuser.slide.synthetic import MACENKO_REFERENCE_HE, SyntheticTissue
from napari_stainfuser.training.nst import NSTConfig
from napari_stainfuser.training.pairs import PairsConfig
from napari_stainfuser.training.tileio import write_png
from napari_stainfuser.training.trainer import TrainConfig

REF = Path(__file__).parents[1] / "data" / "stainfuser-reference"


def _parser():
    parser = argparse.ArgumentParser(prog="stainfuser")
    sub = parser.add_subparsers(dest="command", required=True)
    train_cli.add_parser(sub)
    make_pairs_cli.add_parser(sub)
    return parser


def _defaults(cls):
    return {
        f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
    }


def test_train_flags_default_to_the_recipe():
    args = _parser().parse_args(["train", "stainfuser", "DATA", "-o", "OUT"])
    d = _defaults(TrainConfig)
    for flag in (
        "steps",
        "batch_size",
        "lr",
        "weight_decay",
        "size",
        "precision",
        "device",
        "seed",
        "checkpoint_every",
        "keep_checkpoints",
        "num_workers",
    ):
        assert getattr(args, flag) == d[flag], flag
    assert args.lr == 1e-5 and args.weight_decay == 1e-2
    assert not args.mixed_magnification and not args.resume and args.max_grad_norm is None


def test_make_pairs_flags_default_to_the_library():
    args = _parser().parse_args(["make-pairs", "--sources", "S", "--targets", "T", "-o", "O"])
    d = _defaults(PairsConfig)
    for flag in (
        "method",
        "n_targets",
        "targets_per_source",
        "features",
        "tile_size",
        "tiles_per_slide",
        "level",
        "min_tissue",
        "seed",
        "stain_method",
        "vgg_pool",
        "device",
        "batch_size",
    ):
        assert getattr(args, flag) == d[flag], flag
    assert make_pairs_cli.nst_config(args) == NSTConfig()
    # The help text shows NSTConfig's defaults.
    shown = make_pairs_cli.NST_HELP_DEFAULTS
    ref = NSTConfig()
    assert shown["content_layers"] == ",".join(ref.content_layers)
    assert shown["style_layers"] == ",".join(ref.style_layers)
    for key in ("content_weight", "style_weight", "iterations", "optimizer", "lr"):
        assert shown[key] == getattr(ref, key), key


def test_nst_flags():
    args = _parser().parse_args(
        [
            "make-pairs",
            "--sources",
            "S",
            "--targets",
            "T",
            "-o",
            "O",
            "--method",
            "nst",
            "--style-layers",
            "relu1_1,relu2_1",
            "--style-layer-weights",
            "1,0.5",
            "--iterations",
            "7",
            "--optimizer",
            "lbfgs",
        ]
    )
    cfg = make_pairs_cli.nst_config(args)
    assert cfg.style_layers == ("relu1_1", "relu2_1") and cfg.style_layer_weights == (1.0, 0.5)
    assert cfg.iterations == 7 and cfg.optimizer == "lbfgs" and cfg.style_weight == 1e6
    args.style_layer_weights = "1,x"
    with pytest.raises(ParameterError, match="numbers"):
        make_pairs_cli.nst_config(args)


def test_make_pairs_then_train(tmp_path, capsys):
    tissue = SyntheticTissue(seed=5)
    for i in range(2):
        write_png(
            tmp_path / "src" / f"s{i}.png",
            np.asarray(tissue.render_he((64, 64), origin=(0, 64 * i))),
        )
        tile = tissue.render_he((64, 64), stain_matrix=MACENKO_REFERENCE_HE, origin=(64, 64 * i))
        write_png(tmp_path / "tgt" / f"t{i}.png", np.asarray(tile))
    parser = _parser()
    args = parser.parse_args(
        [
            "make-pairs",
            "--sources",
            str(tmp_path / "src"),
            "--targets",
            str(tmp_path / "tgt"),
            "-o",
            str(tmp_path / "pairs"),
            "--n-targets",
            "2",
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    assert "4 triplets" in capsys.readouterr().out
    args = parser.parse_args(
        [
            "train",
            "stainfuser",
            str(tmp_path / "pairs"),
            "-o",
            str(tmp_path / "run"),
            "--init",
            str(REF / "checkpoint.safetensors"),
            "--config-dir",
            str(REF),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--size",
            "64",
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    assert "step-00000002" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoints" / "step-00000002" / "checkpoint.safetensors").is_file()
