"""The three diffusers configs that define a StainFuser model, read from plain JSON.

A config directory holds ``unet_config.json``, ``vae_config.json`` and
``scheduler_config.json``. The official repository names the same files
``sd21b_unet_config.json`` and so on; both spellings are accepted. Without a
directory the built-in SD2.1-base configs (the published model's) are used.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_json_atomic
from ..errors import CheckpointError

PARTS = ("unet", "vae", "scheduler")
# Our names first: a directory written by save_checkpoint uses them.
FILE_NAMES = {part: (f"{part}_config.json", f"sd21b_{part}_config.json") for part in PARTS}
DEFAULT_CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class ModelConfigs:
    """diffusers config dicts for the UNet, the VAE and the noise scheduler.

    ``origin`` says where they were read from, for error messages.
    """

    unet: dict
    vae: dict
    scheduler: dict
    origin: str = "built-in SD2.1-base"


def has_configs(directory: str | os.PathLike) -> bool:
    """True if ``directory`` holds at least one StainFuser config file."""
    directory = Path(directory)
    return any((directory / name).is_file() for names in FILE_NAMES.values() for name in names)


def _find_file(directory: Path, part: str) -> Path | None:
    for name in FILE_NAMES[part]:
        if (directory / name).is_file():
            return directory / name
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read config JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: a config must be a JSON object, got {type(data).__name__}")
    # `_class_name`, `_diffusers_version`, `_name_or_path` are provenance, not architecture.
    config = {k: v for k, v in data.items() if not k.startswith("_")}
    for key, value in config.items():
        values = value if isinstance(value, list) else [value]
        bad = [
            v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0
        ]
        if bad:
            raise CheckpointError(
                f"{path}: {key} must not be negative, got {value!r}; "
                "sizes, channels and counts of a model are positive"
            )
    return config


def load_configs(config_dir: str | os.PathLike | None = None) -> ModelConfigs:
    """Read the three configs from ``config_dir`` (None: the built-in SD2.1-base ones)."""
    if config_dir is None:
        directory, origin = DEFAULT_CONFIG_DIR, "built-in SD2.1-base"
    else:
        directory = Path(config_dir)
        origin = str(directory)
        if not directory.is_dir():
            raise CheckpointError(f"config directory not found: {directory}")
    paths = {part: _find_file(directory, part) for part in PARTS}
    missing = [FILE_NAMES[part][0] for part, path in paths.items() if path is None]
    if missing:
        raise CheckpointError(
            f"config directory {directory} is missing {', '.join(missing)} "
            f"(official names sd21b_*_config.json are accepted too)"
        )
    parsed = {part: _read_json(path) for part, path in paths.items()}
    return ModelConfigs(**parsed, origin=origin)


def write_configs(configs: ModelConfigs, directory: str | os.PathLike) -> None:
    """Write the configs into ``directory`` under our names and the official ones.

    The official code reads ``sd21b_{unet,vae,scheduler}_config.json`` from its
    config folder, so a checkpoint folder we write serves as that folder too.
    """
    directory = Path(directory)
    for part in PARTS:
        for name in FILE_NAMES[part]:
            write_json_atomic(directory / name, getattr(configs, part))
