"""Plain PNG and JPEG images.

These formats cannot be decoded partially, so the first computed chunk decodes
the whole image once (imagecodecs) and the source keeps it; shape, colour type
and density come from the header alone, so opening reads no pixels. Palette
PNGs are expanded to RGB; RGBA and palette transparency are dropped.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np

from ._readutil import error, file_key, lazy_level, mpp_from_density, not_rgb
from ._readutil import region as _region

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
CHUNK = 1024  # plain images have no native tiles; this only sizes dask tasks

# SOFn markers carry the frame header; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass
class Header:
    format: str
    height: int
    width: int
    mpp: float | None


def _png_header(path: Path, data: bytes) -> Header:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise error(path, "corrupt PNG: no IHDR chunk")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    # Palette (indexed-colour) PNGs hold 1-8-bit indices into 8-bit RGB
    # entries; the decoder expands them to RGB(A).
    if depth != 8 and not (colour == 3 and depth in (1, 2, 4)):
        raise not_rgb(path, f"PNG has {depth}-bit samples")
    if colour in (0, 4):
        raise not_rgb(path, "PNG is greyscale")
    mpp = None
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"pHYs" and pos + 17 <= len(data):
            ppu_x, _, unit = struct.unpack(">IIB", data[pos + 8 : pos + 17])
            mpp = mpp_from_density(ppu_x, 1e6 if unit == 1 else None)  # unit 1 = metre
        if kind in (b"IDAT", b"IEND"):
            break
        pos += 12 + length
    return Header("png", height, width, mpp)


def _jpeg_header(path: Path, data: bytes, final: bool = False) -> Header | None:
    pos, mpp = 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise error(path, f"corrupt JPEG: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        body = data[pos + 4 : pos + 2 + length]
        if marker == 0xE0 and body[:5] == b"JFIF\x00" and len(body) >= 12:
            units, xdensity = body[7], struct.unpack(">H", body[8:10])[0]
            um_per_unit = {1: 25400.0, 2: 10000.0}.get(units)  # dots per inch / per cm
            mpp = mpp_from_density(xdensity, um_per_unit)
        elif marker in _SOF and len(body) >= 6:
            precision, height, width, components = struct.unpack(">BHHB", body[:6])
            if precision != 8:
                raise not_rgb(path, f"JPEG has {precision}-bit samples")
            if components != 3:
                why = "greyscale" if components == 1 else f"{components}-component (CMYK?)"
                raise not_rgb(path, f"JPEG is {why}")
            return Header("jpeg", height, width, mpp)
        elif marker == 0xDA:
            break
        pos += 2 + length
    if pos + 4 > len(data) and not final:
        return None
    raise error(path, "corrupt JPEG: no frame header before the image data")


def read_header(path: Path) -> Header:
    """Shape, colour type and density from the first bytes of the file."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    if data.startswith(PNG_SIGNATURE):
        return _png_header(path, data)
    header = _jpeg_header(path, data)
    # EXIF/ICC blocks can push the frame header past the prefix.
    return header if header is not None else _jpeg_header(path, path.read_bytes(), final=True)


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
