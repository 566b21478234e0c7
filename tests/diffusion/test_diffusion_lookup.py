"""Weight lookup: explicit path, environment variable, offline Hugging Face cache."""

import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest

from napari_stainfuser.diffusion import ENV_VAR, StainFuser, find_weights
from napari_stainfuser.errors import CheckpointError

REF_DIR = Path(__file__).parents[1] / "data" / "stainfuser-reference"
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


def make_hf_snapshot(cache: Path, with_ref: bool) -> Path:
    """The layout huggingface_hub writes: blobs, snapshots/<commit>/<file>, refs/main."""
    repo = cache / "models--R-J--StainFuser"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    shutil.copy(WEIGHTS, snapshot / "checkpoint.safetensors")
    if with_ref:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    return snapshot / "checkpoint.safetensors"


def test_explicit_path_file_and_directory(empty_env):
    assert find_weights(WEIGHTS) == WEIGHTS
    assert find_weights(REF_DIR) == WEIGHTS  # safetensors preferred over .pth


def test_explicit_path_missing(empty_env, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        find_weights(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="directory without checkpoint.safetensors"):
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
    assert "checkpoint.safetensors" in msg and "https://huggingface.co/R-J/StainFuser" in msg
