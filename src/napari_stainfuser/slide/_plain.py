"""Plain PNG and JPEG images.

These formats cannot be decoded partially, so the first computed chunk decodes
the whole image once (imagecodecs) and the source keeps it; shape, colour type
and density come from the header alone (Pillow), so opening reads no pixels. Palette
PNGs are expanded to RGB; RGBA and palette transparency are dropped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
from PIL import Image, UnidentifiedImageError

from ._readutil import error, file_key, lazy_level, mpp_from_density, not_rgb
from ._readutil import region as _region

CHUNK = 1024  # plain images have no native tiles; this only sizes dask tasks


@dataclass
class Header:
    format: str
    height: int
    width: int
    mpp: float | None


def read_header(path: Path) -> Header:
    """Shape, colour type and density from the file's header (Pillow reads no pixels)."""
    try:
        with Image.open(path) as im:
            fmt, mode, (width, height) = im.format, im.mode, im.size
            dpi = im.info.get("dpi")
            rawmode = im.tile[0].args if im.tile and isinstance(im.tile[0].args, str) else ""
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise error(path, f"corrupt image header ({exc})") from None
    kind = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg"}.get(fmt)
    if kind is None:
        raise error(path, f"not a supported image file ({fmt})")
    name = kind.upper()
    if rawmode.endswith(";16B") or mode.startswith("I"):
        raise not_rgb(path, f"{name} has 16-bit samples")
    if mode in ("L", "LA", "1"):
        raise not_rgb(path, f"{name} is greyscale")
    if mode == "CMYK":
        raise not_rgb(path, f"{name} is 4-component (CMYK?)")
    if mode not in ("RGB", "RGBA", "P", "PA"):
        raise not_rgb(path, f"{name} has colour mode {mode}")
    # Pillow gives density in dots per inch, and only when the file says its unit.
    mpp = mpp_from_density(float(dpi[0]), 25400.0) if dpi and dpi[0] else None
    return Header(kind, height, width, mpp)


class PlainSource:
    """Array-like over a whole-image decode, done once on first access."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, path: Path, header: Header):
        self.path = path
        self.header = header
        self.shape = (header.height, header.width, 3)
        self._image: np.ndarray | None = None
        self._lock = threading.Lock()

    def _decode(self) -> np.ndarray:
        with self._lock:
            if self._image is None:
                try:
                    data = self.path.read_bytes()
                    if self.header.format == "png":
                        image = imagecodecs.png_decode(data)
                    else:
                        image = imagecodecs.jpeg8_decode(data)
                except Exception as exc:
                    raise error(self.path, f"cannot decode image: {exc}") from exc
                if image.ndim != 3 or image.shape[:2] != self.shape[:2] or image.shape[2] < 3:
                    raise error(
                        self.path, f"decoded shape {image.shape} does not match header {self.shape}"
                    )
                self._image = np.ascontiguousarray(image[..., :3])  # RGBA -> RGB
            return self._image

    def __getitem__(self, key: Any) -> np.ndarray:
        y0, y1, x0, x1, rest = _region(key, self.shape)
        return self._decode()[y0:y1, x0:x1][rest]

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "header": self.header}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["header"])


def open_plain(path: Path) -> tuple[str, Any, float | None]:
    header = read_header(path)
    source = PlainSource(path, header)
    chunks = (min(CHUNK, header.height), min(CHUNK, header.width), 3)
    return header.format, lazy_level(source, chunks, file_key(path), "plain"), header.mpp
