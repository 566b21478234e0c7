"""Finding the published StainFuser weights on this machine, never downloading them.

Looked for, in order:

1. an explicit path (a file, or a directory holding the weights);
2. the ``STAINFUSER_WEIGHTS`` environment variable (same forms);
3. an existing local Hugging Face cache of ``R-J/StainFuser``, read offline
   with huggingface_hub's own cache API: the snapshot ``refs/main`` points to
   (``snapshot_download(local_files_only=True)``), else the most recently
   downloaded revision (``scan_cache_dir``; copied caches have no refs).

In a directory or snapshot the weights are ``checkpoint.safetensors`` or
``checkpoint.pth`` if present, else its only ``*.safetensors`` file, else its
only ``*.pth`` file (safetensors is preferred: it cannot run code). Several
candidates and none of the usual names is an error that lists them.
"""

import os
from pathlib import Path

from ..errors import CheckpointError

ENV_VAR = "STAINFUSER_WEIGHTS"
HF_REPO_ID = "R-J/StainFuser"
HF_URL = f"https://huggingface.co/{HF_REPO_ID}"
WEIGHT_FILES = ("checkpoint.safetensors", "checkpoint.pth")
WEIGHT_SUFFIXES = (".safetensors", ".pth")


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
    """The StainFuser weight file inside ``directory`` (see the module docstring), or None."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    for suffix in WEIGHT_SUFFIXES:
        found = sorted(p for p in directory.glob(f"*{suffix}") if p.is_file())
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(p.name for p in found)
            raise CheckpointError(
                f"{directory} holds several {suffix} files ({names}); "
                "pass the checkpoint file itself"
            )
    return None


def _resolve(path: Path, what: str) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        found = weights_in_directory(path)
        if found is None:
            raise CheckpointError(
                f"{what} {path} is a directory without a .safetensors or .pth checkpoint"
            )
        return found
    raise CheckpointError(f"{what} not found: {path}")


def _snapshot(cache_dir: Path) -> Path | None:
    """The cached snapshot of the StainFuser repository under ``cache_dir``, or None."""
    from huggingface_hub import scan_cache_dir, snapshot_download
    from huggingface_hub.errors import CacheNotFound, CorruptedCacheException

    if not cache_dir.is_dir():
        return None
    try:
        return Path(snapshot_download(HF_REPO_ID, cache_dir=cache_dir, local_files_only=True))
    except Exception:  # not cached under refs/main (LocalEntryNotFoundError and kin)
        pass
    try:
        repos = scan_cache_dir(cache_dir).repos
    except (CacheNotFound, CorruptedCacheException, OSError):
        return None
    revisions = [
        rev for repo in repos if repo.repo_id == HF_REPO_ID and repo.repo_type == "model"
        for rev in repo.revisions
    ]  # fmt: skip
    return max(revisions, key=lambda r: r.last_modified).snapshot_path if revisions else None


def find_in_hf_cache(cache_dir: Path) -> Path | None:
    """The cached R-J/StainFuser weight file under ``cache_dir``, if any."""
    snapshot = _snapshot(Path(cache_dir))
    return weights_in_directory(snapshot) if snapshot is not None else None


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
        f"({', '.join(str(c) for c in caches)}); download the checkpoint (.safetensors, "
        f"5.26 GB, Apache-2.0) from {HF_URL} and pass its path or set ${ENV_VAR} to it"
    )
