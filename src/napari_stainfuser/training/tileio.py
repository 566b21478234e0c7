"""Reading and atomically writing the tile images and text files of a pair set.

Every file is written under a temporary name in its final folder and renamed
into place, so a killed run leaves either a complete file or none; resuming
can then treat "the file exists" as "this item is finished".
"""

from pathlib import Path

import numpy as np

from ..atomic import write_bytes_atomic
from ..errors import ParameterError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def read_rgb(path) -> np.ndarray:
    """Read an image file as an H×W×3 uint8 array (alpha dropped, grey expanded)."""
    import imagecodecs

    path = Path(path)
    try:
        img = np.asarray(imagecodecs.imread(str(path)))
    except Exception as exc:  # imagecodecs raises several unrelated types
        raise ParameterError(f"{path}: cannot be read as an image ({exc})") from None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ParameterError(f"{path}: expected an RGB image, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ParameterError(f"{path}: expected 8-bit RGB, got {img.dtype}")
    return np.ascontiguousarray(img[..., :3])


def list_images(folder) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ParameterError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def write_png(path, image: np.ndarray) -> None:
    """Write an H×W×3 uint8 array as PNG, atomically."""
    import imagecodecs

    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ParameterError(f"{path}: expected H×W×3 uint8, got {image.dtype} {image.shape}")
    write_bytes_atomic(path, imagecodecs.png_encode(image))


def write_text(path, text: str) -> None:
    """Write a text file atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))
