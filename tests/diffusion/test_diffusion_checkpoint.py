"""Checkpoint reading (strict, weights-only), our own format, and config directories."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusion_cases import REF_DIR
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from napari_stainfuser.diffusion import StainFuser, read_state_dict, save_checkpoint
from napari_stainfuser.errors import CheckpointError

CONFIGS = ("unet_config.json", "vae_config.json", "scheduler_config.json")


@pytest.fixture(scope="module")
def weights():
    return load_file(REF_DIR / "checkpoint.safetensors")


def ref_eps(model, ref):
    return model.predict_noise(ref["x_t"], ref["timesteps"], ref["source"], ref["target_latents"])


def assert_one_line(exc: pytest.ExceptionInfo):
    assert "\n" not in str(exc.value)


def test_ddp_prefix_is_stripped(tmp_path, weights, ref):
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in weights.items()}, path)
    model = StainFuser.load(path, config_dir=REF_DIR)
    torch.testing.assert_close(ref_eps(model, ref), ref["eps"], rtol=1e-4, atol=1e-6)


def test_own_format_roundtrip_keeps_official_layout(tmp_path, ref):
    model = StainFuser.load(REF_DIR / "checkpoint.safetensors", config_dir=REF_DIR)
    out = save_checkpoint(model, tmp_path / "run", {"training_data": "SPI-2M", "steps": 123})
    assert out == tmp_path / "run" / "checkpoint.safetensors"
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    official = [f"sd21b_{name}" for name in CONFIGS]
    assert names == sorted([*CONFIGS, *official, "checkpoint.safetensors", "metadata.json"])
    # Same key names and tensors as the official file.
    with (
        safe_open(out, "pt") as ours,
        safe_open(REF_DIR / "checkpoint.safetensors", "pt") as theirs,
    ):
        assert sorted(ours.keys()) == sorted(theirs.keys())
        for key in theirs.keys():  # noqa: SIM118 (safe_open is not a mapping)
            assert torch.equal(ours.get_tensor(key), theirs.get_tensor(key)), key
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert meta["training_data"] == "SPI-2M" and meta["steps"] == 123
    assert meta["parameters"] == sum(v.numel() for v in load_file(out).values())
    # The folder alone is enough to load: weights + configs.
    again = StainFuser.load(tmp_path / "run")
    assert torch.equal(ref_eps(again, ref), ref_eps(model, ref))


def test_official_config_names_are_accepted(tmp_path, ref):
    for name in CONFIGS:
        shutil.copy(REF_DIR / name, tmp_path / f"sd21b_{name}")
    model = StainFuser.load(REF_DIR / "checkpoint.safetensors", config_dir=tmp_path)
    torch.testing.assert_close(ref_eps(model, ref), ref["eps"], rtol=1e-4, atol=1e-6)


def test_config_dir_missing_a_file(tmp_path):
    for name in CONFIGS[:2]:
        shutil.copy(REF_DIR / name, tmp_path / name)
    with pytest.raises(CheckpointError, match="missing scheduler_config.json") as exc:
        StainFuser.load(REF_DIR / "checkpoint.safetensors", config_dir=tmp_path)
    assert str(tmp_path) in str(exc.value)
    assert_one_line(exc)


def test_checkpoint_for_a_different_architecture(tmp_path):
    # A real model of another size, saved in our format, loaded with the fixture's configs.
    other = tmp_path / "other_configs"
    other.mkdir()
    for name in CONFIGS:
        shutil.copy(REF_DIR / name, other / name)
    unet = json.loads((other / "unet_config.json").read_text())
    unet["block_out_channels"] = [16, 32]
    (other / "unet_config.json").write_text(json.dumps(unet))
    small = StainFuser.from_configs(other, init_seed=0)
    path = save_checkpoint(small, tmp_path / "small")
    with pytest.raises(CheckpointError, match="shape mismatches") as exc:
        StainFuser.load(path, config_dir=REF_DIR)
    msg = str(exc.value)
    assert "conditioner.conv_in.weight [16, 4, 3, 3] vs model [32, 4, 3, 3]" in msg
    assert str(path) in msg and "more" in msg  # long lists are cut, with a count
    assert_one_line(exc)


def test_missing_and_unexpected_keys_are_listed(tmp_path, weights):
    state = dict(weights)
    del state["noise_predictor.encoder_projector.bias"]
    state["noise_predictor.extra.weight"] = torch.zeros(3)
    path = tmp_path / "edited.safetensors"
    save_file(state, path)
    with pytest.raises(CheckpointError) as exc:
        StainFuser.load(path, config_dir=REF_DIR)
    msg = str(exc.value)
    assert "1 missing keys (noise_predictor.encoder_projector.bias)" in msg
    assert "1 unexpected keys (noise_predictor.extra.weight)" in msg
    assert_one_line(exc)
    # The same check applies to pickles, whose shapes are only known after reading.
    torch.save(state, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError, match="missing keys"):
        StainFuser.load(tmp_path / "edited.pth", config_dir=REF_DIR)


def test_truncated_safetensors(tmp_path):
    data = (REF_DIR / "checkpoint.safetensors").read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="safetensors") as exc:
        StainFuser.load(path, config_dir=REF_DIR)
    assert str(path) in str(exc.value)
    assert_one_line(exc)


class _RunsCodeWhenUnpickled:
    """A pickle payload: unpickling calls Path.touch(marker)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_arbitrary_objects_is_refused(tmp_path, weights):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({**weights, "payload": _RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(CheckpointError, match="weights_only") as exc:
        StainFuser.load(path, config_dir=REF_DIR)
    assert not marker.exists()
    assert str(path) in str(exc.value)
    assert_one_line(exc)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="not found"):
        StainFuser.load(tmp_path / "nope.safetensors", config_dir=REF_DIR)


def test_saved_folder_is_a_config_folder_for_the_official_code(tmp_path, ref):
    """The official code reads sd21b_{unet,vae,scheduler}_config.json from its
    config folder and passes them as keyword arguments to diffusers."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    model = StainFuser.load(REF_DIR / "checkpoint.safetensors", config_dir=REF_DIR)
    save_checkpoint(model, tmp_path / "run")
    run = tmp_path / "run"
    unet = UNet2DConditionModel(**json.loads((run / "sd21b_unet_config.json").read_text()))
    vae = AutoencoderKL(**json.loads((run / "sd21b_vae_config.json").read_text()))
    sched = PNDMScheduler(**json.loads((run / "sd21b_scheduler_config.json").read_text()))
    assert (
        unet.config.block_out_channels == model.networks.noise_predictor.config.block_out_channels
    )
    assert vae.config.scaling_factor == model.networks.scaling_factor
    assert sched.config.skip_prk_steps and sched.config.steps_offset == 1
    # Our loader reads the official names alone too.
    for name in CONFIGS:
        (run / name).unlink()
    again = StainFuser.load(run / "checkpoint.safetensors", config_dir=run)
    assert torch.equal(ref_eps(again, ref), ref_eps(model, ref))


def test_every_file_is_synced_before_it_is_renamed(tmp_path, monkeypatch):
    import os

    from napari_stainfuser import atomic

    events = []
    real_fsync, real_replace = atomic.fsync_file, os.replace

    def fsync_file(path):
        events.append(("fsync", Path(path)))
        real_fsync(path)

    def replace(src, dst):
        events.append(("replace", Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic, "fsync_file", fsync_file)
    monkeypatch.setattr(atomic.os, "replace", replace)
    model = StainFuser.load(REF_DIR / "checkpoint.safetensors", config_dir=REF_DIR)
    save_checkpoint(model, tmp_path / "run")
    renamed = [e for e in events if e[0] == "replace"]
    assert sorted(e[2].name for e in renamed) == sorted(
        p.name for p in (tmp_path / "run").iterdir()
    )
    for e in renamed:
        assert events.index(("fsync", e[1])) < events.index(e), e
