"""Weight lookup: explicit path, environment variable, offline Hugging Face cache."""

import os
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
from diffusion_cases import REF_DIR

from napari_stainfuser.diffusion import ENV_VAR, StainFuser, find_weights
from napari_stainfuser.errors import CheckpointError

WEIGHTS = REF_DIR / "checkpoint.safetensors"


@pytest.fixture
def empty_env(monkeypatch, tmp_path):
    """No env var and every Hugging Face cache location pointing into tmp_path."""
    cache = tmp_path / "hf" / "hub"
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def make_hf_snapshot(
    cache: Path,
    with_ref: bool,
    names=("checkpoint.safetensors",),
    commit="0123456789abcdef0123456789abcdef01234567",
) -> Path:
    """The layout huggingface_hub writes: blobs/<sha>, snapshots/<commit>/<file>
    as a symlink to its blob, refs/main holding the commit."""
    repo = cache / "models--R-J--StainFuser"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for i, name in enumerate(names):
        blob = repo / "blobs" / f"{commit[:8]}{i:032x}"
        shutil.copy(WEIGHTS, blob)
        (snapshot / name).symlink_to(blob)
    (snapshot / "README.md").write_text("model card")
    if with_ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
    return snapshot / names[0]


def test_explicit_path_file_and_directory(empty_env):
    assert find_weights(WEIGHTS) == WEIGHTS
    assert find_weights(REF_DIR) == WEIGHTS  # safetensors preferred over .pth


def test_explicit_path_missing(empty_env, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        find_weights(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="directory without a .safetensors or .pth"):
        find_weights(tmp_path)


def test_environment_variable(empty_env, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(REF_DIR / "checkpoint.pth"))
    assert find_weights() == REF_DIR / "checkpoint.pth"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone.pth"))
    with pytest.raises(CheckpointError, match=f"\\${ENV_VAR} not found"):
        find_weights()


@pytest.mark.parametrize("with_ref", [True, False])
def test_hugging_face_cache(empty_env, with_ref):
    cached = make_hf_snapshot(empty_env, with_ref)
    assert find_weights() == cached
    model = StainFuser.load(config_dir=REF_DIR)  # no path at all: found in the cache
    assert model.networks.noise_predictor.config.block_out_channels == [32, 64]


def test_not_found_says_where_and_what(empty_env):
    with pytest.raises(CheckpointError) as exc:
        find_weights()
    msg = str(exc.value)
    assert "\n" not in msg
    assert ENV_VAR in msg and str(empty_env) in msg
    assert ".safetensors" in msg and "https://huggingface.co/R-J/StainFuser" in msg


@pytest.mark.parametrize("name", ["stainfuser.safetensors", "model.pth"])
def test_hugging_face_cache_with_another_file_name(empty_env, name):
    cached = make_hf_snapshot(empty_env, with_ref=True, names=(name,))
    assert find_weights() == cached


def test_hugging_face_cache_prefers_safetensors(empty_env):
    cached = make_hf_snapshot(empty_env, with_ref=True, names=("weights.safetensors", "w.pth"))
    assert find_weights() == cached


def test_hugging_face_cache_with_several_candidates_lists_them(empty_env):
    make_hf_snapshot(empty_env, with_ref=True, names=("a.safetensors", "b.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"several \.safetensors files \(a\.safetensors, b\.s"
    ):
        find_weights()


def test_hugging_face_cache_follows_refs_main(empty_env):
    # Two snapshots; refs/main names the older one, which wins over the newer.
    main = make_hf_snapshot(empty_env, with_ref=True, names=("old.safetensors",), commit="a" * 40)
    make_hf_snapshot(empty_env, with_ref=False, names=("new.safetensors",), commit="b" * 40)
    assert find_weights() == main
    # Without a ref: the most recently downloaded revision (its newest file).
    snapshots = empty_env / "models--R-J--StainFuser" / "snapshots"
    for commit, t in (("a" * 40, 2_000_000), ("b" * 40, 1_000_000)):
        for f in (snapshots / commit).iterdir():
            os.utime(f.resolve(), (t, t))
    (empty_env / "models--R-J--StainFuser" / "refs" / "main").unlink()
    assert find_weights().name == "old.safetensors"
