"""TIFF-family slides: Aperio SVS, Hamamatsu NDPI, OME-TIFF, generic (pyramidal) TIFF.

tifffile parses the container (IFDs, SubIFDs, series, pyramid levels, NDPI
McuStarts, JPEG tables) and provides the per-segment decoder
(``TiffPage.decode``: JPEG with shared tables, NDPI restart-marker tiles,
Aperio JPEG 2000 33003/33005, LZW, deflate, ...). Pixel reading is ours: one
dask task per native tile reads the tile's bytes by offset with ``os.pread``
(no lock, no shared file position, so tiles decode in parallel threads) and
hands them to that decoder. ``TiffLevelSource.read`` does the same for a whole
region without dask, reading in the calling thread while a pool decodes, as
``TiffPage.asarray`` does.

Why not tifffile's zarr store (``TiffFile.aszarr`` in the pinned tifffile
2026.3; the API moves in later releases): it serialises reads through one locked file handle, adds
zarr 3's async machinery per chunk, and its errors do not say which tile was
bad. Reading segments directly keeps reads at tifffile's own decode speed
(``benchmarks/bench_read.py``), lets a corrupt tile fail alone with its
location, and keeps the task source small enough to pickle (workers re-parse
the one IFD they need).

Aperio compression 33003 stores each tile as a JPEG 2000 codestream of
YCbCr samples without the codestream's own colour transform (MCT), possibly
with chroma at half horizontal resolution, although the TIFF tag says RGB
(OpenSlide's Aperio format notes); 33005 stores RGB. tifffile hands 33003
tiles to a plain JPEG 2000 decode that returns full-resolution YCbCr as is,
so that YCbCr → RGB step is done here (``_aperio_ycbcr_to_rgb``).
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile

from ..errors import SlideReadError
from ._readutil import chunk_for, error, file_key, lazy_level, mpp_from_tiff_resolution, not_rgb
from ._readutil import region as _region
from .provenance import from_ome_xml, input_magnification

ASSOCIATED_NAMES = ("thumbnail", "label", "macro")
APERIO_J2K_YCBCR = 33003  # TIFF Compression value; 33005 is the RGB variant
_RGB_PHOTOMETRIC = {2, 6}  # RGB, YCbCr (decoded to RGB)
_GREY_PHOTOMETRIC = {0, 1}  # MinIsWhite, MinIsBlack
_PALETTE_PHOTOMETRIC = 3
_OME_UNIT_UM = {
    "pm": 1e-6,
    "Å": 1e-4,
    "nm": 1e-3,
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}


@dataclass
class TiffParts:
    format: str
    levels: list[da.Array]
    mpp: float | None
    magnification: float | None
    associated: dict[str, da.Array]
    sources: list[TiffLevelSource]
    provenance: dict | None = None


def _j2k_decodes_to_rgb(data: bytes) -> bool:
    """Whether decoding this JPEG 2000 tile already yields RGB rather than YCbCr.

    True when the main header's COD segment enables the multiple component
    transform (the codestream's own RCT/ICT, inverted by the decoder; files
    written by tifffile with compression 33003 do this), or when the SIZ
    segment gives component 1 (Cb) a reduced width: imagecodecs then
    upsamples the chroma and converts with OpenJPEG's sYCC routine.
    """
    pos = data.find(b"\xff\x4f\xff\x51", 0, 4096)  # SOC + SIZ, after JP2 boxes if any
    if pos < 0:
        raise ValueError("no JPEG 2000 codestream header (SOC, SIZ) in the tile")
    siz = data[pos + 2 : pos + 51]
    # SIZ: marker, Lsiz, Rsiz, 8 × 4-byte sizes, Csiz, then (Ssiz, XRsiz, YRsiz) each
    if len(siz) < 49 or int.from_bytes(siz[38:40], "big") != 3:
        raise ValueError("JPEG 2000 tile is not a 3-component codestream")
    if siz[44] != 1:  # XRsiz of Cb
        return True
    pos += 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0x90:  # up to SOT
        if data[pos + 1] == 0x52:  # COD: Scod, progression, 2-byte layer count, MCT
            return len(data) > pos + 8 and data[pos + 8] != 0
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    raise ValueError("JPEG 2000 tile has no COD segment in its main header")


def _aperio_ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Full-range ITU-R BT.601 YCbCr (JFIF, ITU-T T.871) → RGB, rounded and clipped.

    The JPEG-style conversion OpenSlide also applies to Aperio 33003 tiles.
    """
    y = ycbcr[..., 0].astype(np.float64)
    cb = ycbcr[..., 1].astype(np.float64) - 128.0
    cr = ycbcr[..., 2].astype(np.float64) - 128.0
    rgb = np.empty(ycbcr.shape[:-1] + (3,), dtype=np.float64)
    rgb[..., 0] = y + 1.402 * cr
    rgb[..., 1] = y - 0.344136 * cb - 0.714136 * cr
    rgb[..., 2] = y + 1.772 * cb
    np.floor(rgb + 0.5, out=rgb)
    return np.clip(rgb, 0, 255).astype(np.uint8)


class _File:
    """Positional reads of one file, shareable by threads and picklable as its path."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _open(self) -> int:
        with self._lock:
            if self._fd is None:
                fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                self._fd = fd
                weakref.finalize(self, os.close, fd)
            return self._fd

    def read(self, offset: int, count: int) -> bytes:
        fd = self._fd if self._fd is not None else self._open()
        if hasattr(os, "pread"):
            data = os.pread(fd, count, offset)
        else:  # Windows: no pread, so seek+read under the lock
            with self._lock:
                os.lseek(fd, offset, os.SEEK_SET)
                data = os.read(fd, count)
        if len(data) != count:
            raise OSError(f"short read: {len(data)} of {count} bytes at offset {offset}")
        return data

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])


@dataclass
class _Codec:
    """What decoding one page's segments needs, detached from the TiffFile."""

    decode: Callable[..., Any]
    jpegtables: bytes | None
    jpegheader: bytes | None
    offsets: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_page(cls, page: tifffile.TiffPage) -> _Codec:
        page.init_decode()  # tifffile's cached decoder is not thread-safe on first access
        return cls(
            decode=page.decode,
            jpegtables=page.jpegtables,
            jpegheader=page.jpegheader,
            offsets=np.asarray(page.dataoffsets, dtype=np.int64),
            counts=np.asarray(page.databytecounts, dtype=np.int64),
        )


@functools.lru_cache(maxsize=64)
def _codec_at(path: str, ifd: int, size: int, mtime: int) -> _Codec:
    # Only used after unpickling (e.g. on a dask.distributed worker): re-parse
    # the single IFD the source needs. size/mtime are part of the cache key.
    with tifffile.TiffFile(path) as tif:
        tif.filehandle.seek(ifd)
        return _Codec.from_page(tifffile.TiffPage(tif, index=0))


class TiffLevelSource:
    """Array-like Y×X×3 uint8 view of one TIFF page that decodes only touched tiles."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, file: _File, page: tifffile.TiffPage, label: str):
        self.file = file
        self.label = label
        self.ifd = int(page.offset)
        h, w = int(page.imagelength), int(page.imagewidth)
        self.shape = (h, w, 3)
        if page.is_tiled:
            self.tile = (int(page.tilelength), int(page.tilewidth))
        else:
            self.tile = (min(int(page.rowsperstrip) or h, h), w)
        self.grid = (-(-h // self.tile[0]), -(-w // self.tile[1]))
        self.samples = int(page.samplesperpixel)
        self.planar = page.planarconfig == 2 and self.samples > 1
        self.aperio_ycbcr = int(page.compression) == APERIO_J2K_YCBCR
        self._codec: _Codec | None = _Codec.from_page(page)
        self._check_table()

    @property
    def chunks(self) -> tuple[int, int, int]:
        (th, tw), (h, w, _) = self.tile, self.shape
        return (chunk_for(th, h), chunk_for(tw, w), 3)

    def _check_table(self) -> None:
        codec = self._codec
        planes = self.samples if self.planar else 1
        expected = self.grid[0] * self.grid[1] * planes
        if len(codec.offsets) != expected or len(codec.counts) != expected:
            raise error(
                self.file.path,
                f"{self.label}: tile table has {len(codec.offsets)} entries, "
                f"expected {expected}; the TIFF is corrupt",
            )
        size = self.file.path.stat().st_size
        end = int((codec.offsets + codec.counts).max(initial=0))
        if end > size:
            raise error(
                self.file.path,
                f"file is truncated: {self.label} tile data ends at byte {end} "
                f"but the file has {size} bytes",
            )
        try:  # no pixels read: decoders raise here if the codec is unsupported
            codec.decode(None, 0, jpegtables=codec.jpegtables, jpegheader=codec.jpegheader)
        except Exception as exc:
            raise error(self.file.path, f"{self.label}: cannot decode: {exc}") from exc

    def _state(self) -> _Codec:
        if self._codec is None:
            st = self.file.path.stat()
            self._codec = _codec_at(str(self.file.path), self.ifd, st.st_size, st.st_mtime_ns)
        return self._codec

    def __getstate__(self) -> dict[str, Any]:
        # Tile tables of a 100,000² slide are megabytes: ship the IFD offset instead.
        return {k: v for k, v in self.__dict__.items() if k != "_codec"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._codec = None

    def _fail(self, ty: int, tx: int, exc: Exception) -> SlideReadError:
        th, tw = self.tile
        return error(
            self.file.path,
            f"{self.label}: tile at (y={ty * th}, x={tx * tw}) cannot be read: "
            f"{type(exc).__name__}: {exc}",
        )

    def is_empty(self, y0: int, y1: int, x0: int, x1: int) -> bool:
        """True if every tile under [y0:y1, x0:x1] is empty (no bytes: never scanned),
        so the region is background without reading or decoding anything."""
        codec = self._state()
        th, tw = self.tile
        n = self.grid[0] * self.grid[1]
        rows = np.arange(y0 // th, -(-y1 // th))
        cols = np.arange(x0 // tw, -(-x1 // tw))
        index = (rows[:, None] * self.grid[1] + cols[None, :]).ravel()
        planes = [index + s * n for s in range(3)] if self.planar else [index]
        idx = np.concatenate(planes)
        return bool(((codec.counts[idx] == 0) | (codec.offsets[idx] == 0)).all())

    def tile_bytes(self, ty: int, tx: int) -> list[tuple[int, bytes | None]]:
        """(segment index, encoded bytes or None if sparse) for each plane of a tile."""
        codec = self._state()
        index = ty * self.grid[1] + tx
        n = self.grid[0] * self.grid[1]
        out = []
        try:
            for i in [index + s * n for s in range(3)] if self.planar else [index]:
                offset, count = int(codec.offsets[i]), int(codec.counts[i])
                sparse = count == 0 or offset == 0  # nothing scanned there
                out.append((i, None if sparse else self.file.read(offset, count)))
        except Exception as exc:
            raise self._fail(ty, tx, exc) from exc
        return out

    def tile_rgb(
        self, ty: int, tx: int, raw: list[tuple[int, bytes | None]] | None = None
    ) -> np.ndarray:
        """Decoded tile (ty, tx) as h×w×3 uint8, cropped to the image."""
        (th, tw), (h, w, _) = self.tile, self.shape
        need = (min(th, h - ty * th), min(tw, w - tx * tw))
        codec = self._state()
        if raw is None:
            raw = self.tile_bytes(ty, tx)
        if any(data is None for _, data in raw):
            return np.full((*need, 3), 255, dtype=np.uint8)  # empty = background
        try:
            planes = []
            for i, data in raw:
                decoded = codec.decode(
                    data, i, jpegtables=codec.jpegtables, jpegheader=codec.jpegheader
                )[0]
                planes.append(decoded.reshape(decoded.shape[-3:]))
            parts = planes[0] if len(planes) == 1 else np.concatenate(planes, -1)
            if parts.shape[0] < need[0] or parts.shape[1] < need[1]:
                raise ValueError(f"decoded tile has shape {parts.shape}, expected {need}")
            ycbcr = self.aperio_ycbcr and not _j2k_decodes_to_rgb(raw[0][1])
        except Exception as exc:
            raise self._fail(ty, tx, exc) from exc
        parts = parts[: need[0], : need[1]]
        if ycbcr:
            return _aperio_ycbcr_to_rgb(parts)
        if parts.shape[-1] < 3:  # greyscale associated image
            return np.repeat(parts[..., :1], 3, axis=-1)
        return parts[..., :3]

    def read(self, y0: int, y1: int, x0: int, x1: int, pool: Executor | None = None) -> np.ndarray:
        """Pixels [y0:y1, x0:x1], decoding the touched tiles (in ``pool`` if given)."""
        th, tw = self.tile
        rows, cols = range(y0 // th, -(-y1 // th)), range(x0 // tw, -(-x1 // tw))
        if len(rows) == 1 and len(cols) == 1:
            # One tile (every chunk of a tiled level): hand back a view, no copy.
            ty, tx = rows[0], cols[0]
            return self.tile_rgb(ty, tx)[y0 - ty * th : y1 - ty * th, x0 - tx * tw : x1 - tx * tw]
        out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)

        def paste(job: tuple[int, int, list | None]) -> None:
            ty, tx, raw = job
            oy, ox = ty * th, tx * tw
            ya, yb = max(y0, oy), min(y1, oy + th)
            xa, xb = max(x0, ox), min(x1, ox + tw)
            if raw is not None and any(data is None for _, data in raw):
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = (
                    255  # empty: background, nothing decoded
                )
                return
            tile = self.tile_rgb(ty, tx, raw)
            out[ya - y0 : yb - y0, xa - x0 : xb - x0] = tile[ya - oy : yb - oy, xa - ox : xb - ox]

        if pool is None:
            for ty in rows:
                for tx in cols:
                    paste((ty, tx, None))
        else:
            # Like tifffile: this thread reads the (small) encoded tiles while
            # the pool decodes, so the workers spend their time in the codec.
            jobs = ((ty, tx, self.tile_bytes(ty, tx)) for ty in rows for tx in cols)
            for _ in pool.map(paste, jobs):  # re-raises the first tile error
                pass
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        y0, y1, x0, x1, rest = _region(key, self.shape)
        return self.read(y0, y1, x0, x1)[rest]


def _check_rgb(path: Path, series: tifffile.TiffPageSeries, what: str) -> None:
    page = series.keyframe
    if page.dtype != np.uint8:
        raise not_rgb(path, f"{what} has {page.bitspersample}-bit {page.dtype} samples")
    planes = [
        (a, n) for a, n in zip(series.axes, series.shape, strict=True) if a not in "YXS" and n > 1
    ]
    if planes:
        dims = " × ".join(f"{n} {a}" for a, n in planes)
        kind = "multichannel (fluorescence?)" if any(a == "C" for a, _ in planes) else "multi-plane"
        raise not_rgb(path, f"{what} is {kind}: {dims} planes of {series.axes} {series.shape}")
    s, photometric = int(page.samplesperpixel), int(page.photometric)
    if photometric in _RGB_PHOTOMETRIC and s in (3, 4):
        return
    if photometric in _GREY_PHOTOMETRIC:
        why = "greyscale" if s == 1 else f"multichannel ({s} channels)"
        raise not_rgb(path, f"{what} is {why}")
    if photometric == _PALETTE_PHOTOMETRIC:
        raise not_rgb(path, f"{what} is a palette (indexed-colour) image")
    name = getattr(page.photometric, "name", str(photometric))
    raise not_rgb(path, f"{what} has photometric {name} with {s} samples")


def _associated_name(series: tifffile.TiffPageSeries) -> str | None:
    name = (series.name or "").lower()
    return next((n for n in ASSOCIATED_NAMES if n in name), None)


def _levels_from_series(series: list[tifffile.TiffPageSeries], main: int) -> list[Any]:
    """Pyramid levels of the main series, including OME pyramids stored as series.

    tifffile groups SubIFD, SVS, NDPI and generic reduced-page pyramids itself;
    OME-TIFFs that store each level as its own Image stay separate series, so
    consecutive series that shrink by one integer factor per step are joined.
    """
    levels = list(series[main].levels)
    if len(levels) > 1:
        return levels
    key = series[main].keyframe
    for s in series[main + 1 :]:
        prev, cur = levels[-1].keyframe, s.keyframe
        if cur.dtype != key.dtype or cur.samplesperpixel != key.samplesperpixel:
            break
        if _associated_name(s) or cur.imagewidth >= prev.imagewidth:
            break
        f = round(prev.imagewidth / cur.imagewidth)
        if f < 2 or abs(prev.imagelength / f - cur.imagelength) > 1:
            break
        levels.append(s)
    return levels


def _aperio(description: str) -> dict[str, str]:
    fields = {}
    for part in description.split("|")[1:]:
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def _ome_metadata(xml: str, image_index: int) -> tuple[float | None, float | None]:
    """(µm/px, objective magnification) of one OME Image."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    images = root.findall(f"{ns}Image")
    if not images:
        return None, None
    image = images[image_index] if image_index < len(images) else images[0]
    mpp = None
    pixels = image.find(f"{ns}Pixels")
    if pixels is not None:
        size = _float(pixels.get("PhysicalSizeX"))
        unit = _OME_UNIT_UM.get(pixels.get("PhysicalSizeXUnit", "µm"))
        mpp = size * unit if size and unit else None
    objectives = root.findall(f".//{ns}Instrument/{ns}Objective")
    settings = image.find(f"{ns}ObjectiveSettings")
    chosen = None
    if settings is not None:
        chosen = next((o for o in objectives if o.get("ID") == settings.get("ID")), None)
    elif len(objectives) == 1:
        chosen = objectives[0]
    mag = _float(chosen.get("NominalMagnification")) if chosen is not None else None
    return mpp, mag


def _format(tif: tifffile.TiffFile) -> str:
    if tif.is_svs:
        return "aperio-svs"
    if tif.is_ndpi:
        return "ndpi"
    if tif.is_ome:
        return "ome-tiff"
    return "tiff"


def _metadata(
    tif: tifffile.TiffFile, fmt: str, page: tifffile.TiffPage, main: int
) -> tuple[float | None, float | None]:
    mpp = mag = None
    if fmt == "aperio-svs":
        fields = _aperio(page.description)
        mpp, mag = _float(fields.get("MPP")), _float(fields.get("AppMag"))
    elif fmt == "ndpi":
        mag = _float((page.ndpi_tags or {}).get("Magnification"))
    elif fmt == "ome-tiff" and tif.ome_metadata:
        mpp, mag = _ome_metadata(tif.ome_metadata, main)
    if mpp is None:
        mpp = mpp_from_tiff_resolution(page.resolution, page.resolutionunit)
    return mpp, mag


def _no_image_reason(path: Path, size: int) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    offset = int.from_bytes(head[8:16] if big else head[4:8], "little" if order == "<" else "big")
    if offset >= size:
        return (
            f"file is truncated or corrupt: the first image directory is at byte {offset} "
            f"but the file has {size} bytes"
        )
    return "TIFF contains no readable image (corrupt image directory)"


def open_tiff(path: Path) -> TiffParts:
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise error(path, f"not a readable TIFF ({type(exc).__name__}: {exc})") from exc
    with tif:
        try:
            series = [s for s in tif.series if s.keyframe is not None and s.shape]
            fmt = _format(tif)
        except Exception as exc:
            raise error(path, f"corrupt TIFF structure ({type(exc).__name__}: {exc})") from exc
        if not series:
            raise error(path, _no_image_reason(path, tif.filehandle.size))
        candidates = [i for i, s in enumerate(series) if _associated_name(s) is None] or [0]
        main = max(
            candidates,
            key=lambda i: (series[i].keyframe.imagelength * series[i].keyframe.imagewidth, -i),
        )
        levels = _levels_from_series(series, main)
        file, key = _File(path), file_key(path)
        sources = []
        for k, level in enumerate(levels):
            _check_rgb(path, level, f"level {k}")
            sources.append(TiffLevelSource(file, level.keyframe, f"level {k}"))
        arrays = [lazy_level(s, s.chunks, key, s.ifd) for s in sources]
        associated = {}
        used = {id(s) for s in levels}
        for s in series:
            name = _associated_name(s)
            if name is None or name in associated or id(s) in used:
                continue
            page = s.keyframe
            photometric = int(page.photometric)
            if page.dtype != np.uint8 or photometric not in _RGB_PHOTOMETRIC | _GREY_PHOTOMETRIC:
                continue  # not shown as an RGB picture; the slide itself is fine
            try:
                source = TiffLevelSource(file, page, f"associated image '{name}'")
            except SlideReadError:
                continue  # a broken label or macro must not make the slide unreadable
            associated[name] = lazy_level(source, source.chunks, key, source.ifd)
        mpp, mag = _metadata(tif, fmt, levels[0].keyframe, main)
        prov = from_ome_xml(tif.ome_metadata, str(path)) if fmt == "ome-tiff" else None
    # Our outputs carry the input's magnification in their provenance.
    mag = mag if mag is not None else input_magnification(prov)
    return TiffParts(fmt, arrays, mpp, mag, associated, sources, prov)
