"""Finding the published StainFuser weights on this machine, never downloading them.

Looked for, in order:

1. an explicit path (a file, or a directory holding ``checkpoint.safetensors``
   or ``checkpoint.pth``);
2. the ``STAINFUSER_WEIGHTS`` environment variable (same forms);
3. an existing local Hugging Face cache of ``R-J/StainFuser``, read offline.
"""

import os
from pathlib import Path

from ..errors import CheckpointError

ENV_VAR = "STAINFUSER_WEIGHTS"
HF_REPO_ID = "R-J/StainFuser"
HF_URL = f"https://huggingface.co/{HF_REPO_ID}"
WEIGHT_FILES = ("checkpoint.safetensors", "checkpoint.pth")


def hf_cache_dirs() -> list[Path]:
    """Hugging Face hub cache directories, from the environment as it is now."""
    dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    dirs.append(Path(xdg) / "huggingface" / "hub")
    try:
        from huggingface_hub import constants

        dirs.append(Path(constants.HF_HUB_CACHE))
    except ImportError:
        pass
    unique = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def weights_in_directory(directory: Path) -> Path | None:
    """The StainFuser weight file inside ``directory``, safetensors first."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def _resolve(path: Path, what: str) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        found = weights_in_directory(path)
        if found is None:
            raise CheckpointError(
                f"{what} {path} is a directory without {' or '.join(WEIGHT_FILES)}"
            )
        return found
    raise CheckpointError(f"{what} not found: {path}")


def find_in_hf_cache(cache_dir: Path) -> Path | None:
    """The cached R-J/StainFuser weight file under ``cache_dir``, if any."""
    from huggingface_hub import try_to_load_from_cache

    for name in WEIGHT_FILES:
        hit = try_to_load_from_cache(HF_REPO_ID, name, cache_dir=cache_dir)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    # A snapshot without refs/main (copied caches, pinned revisions): take the newest.
    snapshots = cache_dir / ("models--" + HF_REPO_ID.replace("/", "--")) / "snapshots"
    if snapshots.is_dir():
        found = [p for name in WEIGHT_FILES for p in snapshots.glob(f"*/{name}") if p.is_file()]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime)
    return None


def find_weights(path: str | os.PathLike | None = None) -> Path:
    """Locate the StainFuser checkpoint file; raise CheckpointError saying where we looked."""
    if path is not None:
        return _resolve(Path(path), "checkpoint")
    env = os.environ.get(ENV_VAR)
    if env:
        return _resolve(Path(env), f"${ENV_VAR}")
    caches = hf_cache_dirs()
    for cache in caches:
        found = find_in_hf_cache(cache)
        if found is not None:
            return found
    raise CheckpointError(
        "no StainFuser weights found: no path given, "
        f"${ENV_VAR} is not set, and no {HF_REPO_ID} snapshot in the Hugging Face cache "
        f"({', '.join(str(c) for c in caches)}); download {WEIGHT_FILES[0]} (5.26 GB, Apache-2.0) "
        f"from {HF_URL} and pass its path or set ${ENV_VAR} to it"
    )
