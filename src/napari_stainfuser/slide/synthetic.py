"""Synthetic slides: procedural tissue rendered lazily with Beer–Lambert.

The tissue is an infinite plane fixed by a seed: islands of tissue on white
glass, fibrous eosinophilic stroma (wavy collagen bundles, clefts) with
spindle-shaped fibroblast nuclei, glands (a lumen ringed by columnar epithelial
cells with textured, irregular nuclei) and aggregates of small round
lymphocytes. Where both coordinates are below 1.5 mm (negative ones included)
there is always tissue; elsewhere roughly 40 % of the plane is tissue.

A slide of shape (height, width) is the window of that plane starting at
`origin` (pixels); every chunk is computed from global coordinates, so pixels
do not depend on the chunking, the shape or the window: a crop of a big slide
equals the same window rendered directly, bit for bit. Sizes are physical
(epithelial nuclei 8-12 µm long, fibroblast spindles 9-16 µm, lymphocytes
about 7 µm across, glands 80-140 µm), so `mpp` (µm/px) is a zoom: the
same seed at 1.0 µm/px is the same tissue at half the resolution. Above
2 µm/px nuclei are smaller than a pixel and are drawn as their expected
coverage; fibres and chromatin fade to their means as they get finer than the
pixels, so coarse renderings stay band-limited. A pixel that a nucleus covers
in part mixes the two in light, not in stain, as a camera pixel does. Pyramid
levels (`pyramid_he`) are direct renderings down to 2 µm/px and area averages
below, so every level agrees with the area average of level 0.

Optical density convention: natural log, as in `napari_stainfuser.stain`,
Macenko's reference code and torchstain: ``OD = -ln(I / Io)``. A pixel's OD is
``C @ M`` for stain concentrations C (one per stain) and a stain matrix M whose
rows are unit OD vectors, so ``I = Io * exp(-(C @ M))``, rounded half up to
uint8; glass (C = 0) is exactly ``round(Io)``. `OD_BASE` records the base. (The
stain module decodes with ``-ln((I + 1) / Io)`` to keep black finite; that shifts
OD by ln(1 + 1/I), under 0.005 for I >= 200.) Typical H&E concentrations:
nuclei 1-2.3 hematoxylin, stroma 0.2-0.9 eosin; over tissue the 99th
percentiles are about 1.9 and 0.9 (Macenko's reference maxima: 1.97, 1.03).

API (shapes are (height, width); all arrays are lazy dask arrays)::

    t = SyntheticTissue(seed=0, mpp=0.5)
    t.concentrations(shape)            # Y×X×2 float32: hematoxylin, eosin
    t.render_he(shape, stain_matrix=RUIFROK_HE, scale=1.0, io=240, noise=0.0)
    t.ihc_concentrations(shape, marker="CD3")   # (Y×X×2 H, DAB; Y×X bool mask)
    t.render_ihc(shape, marker="CD3")           # (Y×X×3 uint8, Y×X bool mask)
    t.tissue_mask(shape)               # Y×X bool: tissue (True) or glass
    t.pyramid_he(shape)                # [level 0, level 1, ...], as area averages of level 0

    synthetic_he(shape, seed)                        # Y×X×3 uint8
    synthetic_pair(shape, seed, matrix_a, matrix_b)  # two pixel-aligned renderings
    synthetic_ihc(shape, seed, marker)               # (rgb, true-cell mask)
    render(concentrations, stain_matrix, ...)        # Beer–Lambert on a lazy C array
    concentrations_to_rgb(conc, stain_matrix, ...)   # the same on a numpy array

Every method also takes ``chunks`` (int or (rows, cols), default 512) and
``origin`` (the window's top-left corner in the plane, default (0, 0)).
`scale` multiplies each stain's concentration; `io` is one or three background
intensities; `noise` is the standard deviation of sensor noise in grey levels,
hashed from the seed and the pixel's coordinates (default 0: glass is exactly
Io). IHC markers (`MARKERS`): CD3 (membrane of 75 % of lymphocytes), CK8/18
(cytoplasm of gland epithelium), Ki67 (nuclei of 30 % of epithelial cells and
lymphocytes). The mask marks the stained cells' pixels (where the cell covers
at least half the pixel, in tissue).
"""

import dask.array as da
import numpy as np
from dask.array.core import normalize_chunks
from dask.base import tokenize

from ..errors import ParameterError
from ..stain.matrices import RUIFROK_HDAB, RUIFROK_HE
from ..stain.matrices import stain_matrix as _stain_matrix
from ..tiling.memory import ResultStore
from ._procedural import pixel_hashes, stream_key
from ._staining import MARKERS as _MARKER_SPECS
from ._staining import he_block, ihc_block, strips
from ._tissue import DETAIL_MPP, TissueModel
from .pyramid import downsample2x, level_shapes

__all__ = [
    "MACENKO_REFERENCE_HE",
    "MARKERS",
    "OD_BASE",
    "SyntheticTissue",
    "concentrations_to_rgb",
    "render",
    "synthetic_he",
    "synthetic_ihc",
    "synthetic_pair",
]

OD_BASE = float(np.e)
MARKERS = tuple(_MARKER_SPECS)

# H&E reference vectors of Macenko et al.'s reference implementation (torchstain's
# HERef): a second, realistic H&E matrix for pixel-aligned pairs.
MACENKO_REFERENCE_HE = _stain_matrix([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]])

_LN_BASE = np.log(OD_BASE)
# Rendered blocks of a pyramid's last direct level kept for its coarser levels:
# all of the 24,576² sample's 2 µm/px level (113 MB) fits.
MEMO_BYTES = 256 * 2**20
_NOISE_STREAM = 1000


class _Memo:
    """A block function with a bounded LRU of its results, keyed by window.

    It hands out copies, so no caller can change what the next one gets; a
    pickled copy (a dask worker's) starts empty.
    """

    def __init__(self, fn, max_bytes: int):
        self.fn, self.max_bytes = fn, int(max_bytes)
        self._blocks = ResultStore(self.max_bytes)

    def __getstate__(self):
        return {"fn": self.fn, "max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.__init__(state["fn"], state["max_bytes"])

    def __call__(self, *window):
        hit = self._blocks.get(window)
        if hit is None:
            hit = self.fn(*window)
            if hit.nbytes <= self.max_bytes:
                self._blocks.put(window, hit)
        return hit.copy()


def _check_shape(shape):
    try:
        h, w = (int(s) for s in shape)
        ok = len(tuple(shape)) == 2 and h > 0 and w > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ParameterError(f"shape must be (height, width) with positive ints, got {shape!r}")
    return h, w


def _check_pair(value, name):
    try:
        a, b = (value, value) if np.ndim(value) == 0 else tuple(value)
        a, b = int(a), int(b)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    return a, b


def _chunks(chunks, shape, n):
    cy, cx = _check_pair(chunks, "chunks")
    if cy <= 0 or cx <= 0:
        raise ParameterError(f"chunks must be positive, got {chunks!r}")
    return normalize_chunks((cy, cx, n), shape + (n,))


def _check_io(io):
    try:
        v = np.broadcast_to(np.asarray(io, dtype=np.float64), (3,))
    except (TypeError, ValueError):
        v = np.full(3, np.nan)
    if not np.all(np.isfinite(v)) or np.any(v <= 0) or np.any(v > 255):
        raise ParameterError(
            f"io (background intensity) must be one or three values in (0, 255], got {io!r}"
        )
    return v


def _check_scale(scale, n):
    try:
        v = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n,))
    except ValueError:
        raise ParameterError(
            f"scale needs 1 or {n} values (one per stain), got {scale!r}"
        ) from None
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ParameterError(f"scale must be finite and non-negative, got {scale!r}")
    return v


def _check_marker(marker):
    for m in MARKERS:
        if str(marker).lower() == m.lower():
            return m
    raise ParameterError(f"IHC marker {marker!r} is unknown; valid: {', '.join(MARKERS)}")


def concentrations_to_rgb(
    conc, stain_matrix, scale=1.0, io=240.0, noise=0.0, seed=0, noise_stream=0, origin=(0, 0)
) -> np.ndarray:
    """Beer–Lambert for an in-memory Y×X×n concentration array -> Y×X×3 uint8.

    ``I = io * exp(-((scale * C) @ M))``, plus sensor noise of standard
    deviation `noise` (intensity units, hashed from `seed`, `noise_stream` and
    the global coordinates ``origin + (row, col)``), rounded half up, clipped.
    """
    m = _stain_matrix(stain_matrix)
    conc = np.asarray(conc)
    if conc.ndim != 3 or conc.shape[-1] != m.shape[0]:
        raise ParameterError(
            f"concentrations must be Y×X×{m.shape[0]} for a {m.shape[0]}-stain matrix, "
            f"got shape {conc.shape}"
        )
    ms = (_check_scale(scale, m.shape[0])[:, None] * m * -_LN_BASE).astype(np.float32)
    io_v = _check_io(io).astype(np.float32)
    sigma = _check_noise(noise)
    oy, ox = _check_pair(origin, "origin")
    h, w = conc.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    glass = np.minimum(io_v * np.float32(1.0) + np.float32(0.5), 255).astype(np.uint8)
    for s0, s1 in strips(0, h, w):
        c = conc[s0:s1]
        nz = _noise(seed, noise_stream, s0 + oy, s1 + oy, ox, ox + w, sigma) if sigma else None
        if nz is None and not c.any():
            out[s0:s1] = glass  # exp(0) = 1: what the formula below gives for C = 0
            continue
        for ch in range(3):
            # A fixed float32 formula per pixel, whatever the chunk or strip.
            od = c[..., 0] * ms[0, ch]
            for st in range(1, m.shape[0]):
                od += c[..., st] * ms[st, ch]
            i = np.exp(od, out=od)
            i *= io_v[ch]
            if nz is not None:
                i += nz[..., ch]
            i += np.float32(0.5)
            np.clip(i, 0, 255, out=i)
            out[s0:s1, :, ch] = i
    return out


def _check_noise(noise):
    try:
        sigma = float(noise)
    except (TypeError, ValueError):
        sigma = float("nan")
    if not np.isfinite(sigma) or sigma < 0:
        raise ParameterError(f"noise must be a non-negative standard deviation, got {noise!r}")
    return sigma


def _noise(seed, stream, y0, y1, x0, x1, sigma):
    """Sensor noise hashed from global pixel coordinates, std = sigma per channel."""
    ys, xs = np.arange(y0, y1), np.arange(x0, x1)
    h = pixel_hashes(stream_key(seed, _NOISE_STREAM + stream), ys, xs)
    out = np.empty(h.shape + (3,), np.float32)
    k = np.float32(sigma * np.sqrt(6.0) / 1024.0)
    ten = np.uint64(0x3FF)
    for ch in range(3):
        # Two 10-bit uniforms per channel from disjoint bits of one 64-bit hash;
        # their sum is triangular on (-1, 1) with standard deviation 1 / sqrt(6).
        a = ((h >> np.uint64(20 * ch)) & ten).astype(np.float32)
        a += ((h >> np.uint64(20 * ch + 10)) & ten).astype(np.float32)
        a -= np.float32(1023.0)
        a *= k
        out[..., ch] = a
    return out


def render(
    concentrations,
    stain_matrix,
    scale=1.0,
    io=240.0,
    noise=0.0,
    seed=0,
    noise_stream=0,
    origin=(0, 0),
) -> da.Array:
    """Render a lazy Y×X×n concentration array to a lazy Y×X×3 uint8 RGB array.

    Same formula as `concentrations_to_rgb`, chunk by chunk; the noise is
    hashed from global coordinates, so it too is independent of chunking.
    """
    m = _stain_matrix(stain_matrix)
    conc = da.asarray(concentrations)
    if conc.ndim != 3 or conc.shape[-1] != m.shape[0]:
        raise ParameterError(
            f"concentrations must be Y×X×{m.shape[0]} for a {m.shape[0]}-stain matrix, "
            f"got shape {conc.shape}"
        )
    scale_v, io_v, sigma = _check_scale(scale, m.shape[0]), _check_io(io), _check_noise(noise)
    oy, ox = _check_pair(origin, "origin")
    if conc.chunks[2] != (m.shape[0],):
        conc = conc.rechunk({2: -1})

    def block(c, block_info=None):
        (y0, _), (x0, _), _ = block_info[0]["array-location"]
        return concentrations_to_rgb(
            c, m, scale_v, io_v, sigma, seed, noise_stream, (y0 + oy, x0 + ox)
        )

    name = "synthetic-rgb-" + tokenize(
        conc.name, m, scale_v, io_v, sigma, seed, noise_stream, oy, ox
    )
    return da.map_blocks(
        block,
        conc,
        dtype=np.uint8,
        chunks=conc.chunks[:2] + ((3,),),
        name=name,
        meta=np.empty((0, 0, 0), np.uint8),
    )


class SyntheticTissue:
    """A seeded procedural tissue plane at `mpp` µm per pixel (see module docstring)."""

    def __init__(self, seed: int = 0, mpp: float = 0.5):
        if not isinstance(seed, (int, np.integer)):
            raise ParameterError(f"seed must be an int, got {seed!r}")
        try:
            ok = np.isfinite(mpp) and 0.05 <= mpp <= 100.0
        except TypeError:
            ok = False
        if not ok:
            raise ParameterError(f"mpp must be a number in [0.05, 100] µm/px, got {mpp!r}")
        self.seed = int(seed)
        self.mpp = float(mpp)
        self._model = TissueModel(self.seed, self.mpp)

    def __repr__(self):
        return f"SyntheticTissue(seed={self.seed}, mpp={self.mpp})"

    def _lazy(self, kind, fn, shape, n, chunks, origin, dtype=np.float32, token=()):
        shape = _check_shape(shape)
        oy, ox = _check_pair(origin, "origin")
        chunks = _chunks(chunks, shape, n)

        def block(block_info=None):
            (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
            return fn(y0 + oy, y1 + oy, x0 + ox, x1 + ox)

        token = tokenize(self.seed, self.mpp, kind, shape, chunks, oy, ox, *token)
        return da.map_blocks(
            block,
            chunks=chunks,
            dtype=dtype,
            name=f"synthetic-{kind}-{token}",
            meta=np.empty((0, 0, 0), dtype),
        )

    def concentrations(self, shape, chunks=512, origin=(0, 0)) -> da.Array:
        """H&E stain concentrations, Y×X×2 float32 (hematoxylin, eosin), OD units."""
        model = self._model
        return self._lazy("he", lambda *w: he_block(model, *w), shape, 2, chunks, origin)

    def ihc_concentrations(self, shape, marker="CD3", chunks=512, origin=(0, 0)):
        """(Y×X×2 float32 hematoxylin and DAB concentrations, Y×X bool true-cell mask)."""
        marker, model = _check_marker(marker), self._model
        both = self._lazy(
            f"ihc-{marker}", lambda *w: ihc_block(model, marker, *w), shape, 3, chunks, origin
        )
        return both[..., :2], both[..., 2] > 0.5

    def tissue_mask(self, shape, chunks=512, origin=(0, 0)) -> da.Array:
        """Y×X bool: True where the tissue coverage is at least one half."""
        model = self._model

        def fn(y0, y1, x0, x1):
            ys, xs = np.arange(y0, y1, dtype=float), np.arange(x0, x1, dtype=float)
            return (model.tissue(ys, xs) >= 0.5)[..., None]

        return self._lazy("tissue", fn, shape, 1, chunks, origin, dtype=bool)[..., 0]

    def _render(
        self,
        kind,
        conc_fn,
        shape,
        stain_matrix,
        scale,
        io,
        noise,
        chunks,
        origin,
        noise_stream,
        extra_token=(),
        memo_bytes=0,
    ):
        m = _stain_matrix(stain_matrix)
        if m.shape[0] != 2:
            raise ParameterError(
                f"stain_matrix for H&E needs 2 rows (hematoxylin, eosin), got {m.shape[0]}"
            )
        scale_v, io_v, sigma = _check_scale(scale, 2), _check_io(io), _check_noise(noise)
        seed = self.seed

        def fn(y0, y1, x0, x1):
            # Concentrations and rendering in one task: no float block between tasks.
            conc = conc_fn(y0, y1, x0, x1)
            return concentrations_to_rgb(
                conc, m, scale_v, io_v, sigma, seed, noise_stream, (y0, x0)
            )

        token = (m, scale_v, io_v, sigma, noise_stream, extra_token)
        if memo_bytes:
            fn = _Memo(fn, memo_bytes)
        return self._lazy(kind, fn, shape, 3, chunks, origin, np.uint8, token)

    def render_he(
        self,
        shape,
        stain_matrix=RUIFROK_HE,
        scale=1.0,
        io=240.0,
        noise=0.0,
        chunks=512,
        origin=(0, 0),
        noise_stream=0,
    ) -> da.Array:
        """The tissue in H&E, Y×X×3 uint8 (Beer–Lambert with a 2-stain `stain_matrix`)."""
        model = self._model
        return self._render(
            "he-rgb",
            lambda *w: he_block(model, *w),
            shape,
            stain_matrix,
            scale,
            io,
            noise,
            chunks,
            origin,
            noise_stream,
        )

    def pyramid_he(
        self,
        shape,
        min_size=1024,
        chunks=512,
        origin=(0, 0),
        stain_matrix=RUIFROK_HE,
        scale=1.0,
        io=240.0,
        noise=0.0,
        noise_stream=0,
    ) -> list:
        """Multiscale H&E whose level k agrees with the 2**k area average of level 0.

        Levels down to `DETAIL_MPP` are the tissue rendered directly at
        mpp · 2**k, each pixel sampling the plane at the centroid of the
        level-0 pixels it covers; coarser levels are 2×2 area averages
        (`pyramid.downsample2x`) of the last of those, because below it nuclei
        are smaller than a pixel and no direct rendering keeps them. Everything
        stays lazy: a chunk of any level computes only the pixels under it.
        Level shapes halve (rounding down) while the long side exceeds
        `min_size`; level k starts at ``origin // 2**k`` (use an origin that is
        a multiple of 2**levels for pixels identical to a crop of a larger
        window). The other keywords are those of `render_he`.
        """
        oy, ox = _check_pair(origin, "origin")
        m = _stain_matrix(stain_matrix)
        shapes = level_shapes(_check_shape(shape), min_size)
        direct = [k == 0 or self.mpp * 2**k <= DETAIL_MPP for k in range(len(shapes))]
        last_direct = sum(direct) - 1
        levels = []
        for k, level_shape in enumerate(shapes):
            f = 2**k
            if not direct[k]:
                levels.append(downsample2x(levels[-1]))
                continue
            model = TissueModel(self.seed, self.mpp * f)
            # Level-k pixel j covers level-0 pixels [j f, (j + 1) f), whose
            # centres average to j f + (f - 1) / 2: j + 1/2 - 1/(2 f) here.
            shift = (0.5 - 0.5 / f, 0.5 - 0.5 / f)
            levels.append(
                self._render(
                    f"he-rgb-level{k}",
                    lambda *w, model=model, shift=shift: he_block(model, *w, shift=shift),
                    level_shape,
                    m,
                    scale,
                    io,
                    noise,
                    chunks,
                    (oy // f, ox // f),
                    noise_stream,
                    extra_token=shift,
                    # Every coarser level is made from this one's blocks, and
                    # napari and the live engine read those separately.
                    memo_bytes=MEMO_BYTES if k == last_direct < len(shapes) - 1 else 0,
                )
            )
        return levels

    def render_ihc(
        self,
        shape,
        marker="CD3",
        stain_matrix=RUIFROK_HDAB,
        scale=1.0,
        io=240.0,
        noise=0.0,
        chunks=512,
        origin=(0, 0),
        noise_stream=0,
    ):
        """(Y×X×3 uint8 H-DAB rendering, Y×X bool mask of the marker-positive cells)."""
        conc, mask = self.ihc_concentrations(shape, marker, chunks, origin)
        rgb = render(conc, stain_matrix, scale, io, noise, self.seed, noise_stream, origin)
        return rgb, mask


def synthetic_he(shape=(20000, 20000), seed=0, chunks=512, mpp=0.5, **kw) -> da.Array:
    """A lazy synthetic H&E slide; `kw` goes to `SyntheticTissue.render_he`."""
    return SyntheticTissue(seed, mpp).render_he(shape, chunks=chunks, **kw)


def synthetic_pair(
    shape=(2048, 2048),
    seed=0,
    matrix_a=RUIFROK_HE,
    matrix_b=MACENKO_REFERENCE_HE,
    scale_a=1.0,
    scale_b=1.0,
    io=240.0,
    noise=0.0,
    chunks=512,
    origin=(0, 0),
    mpp=0.5,
):
    """The same tissue rendered with two stain matrices / scales: pixel-aligned (a, b).

    With noise, a and b get independent noise (streams 0 and 1).
    """
    t = SyntheticTissue(seed, mpp)
    conc = t.concentrations(shape, chunks, origin)
    a = render(conc, matrix_a, scale_a, io, noise, seed, 0, origin)
    b = render(conc, matrix_b, scale_b, io, noise, seed, 1, origin)
    return a, b


def synthetic_ihc(shape=(4096, 4096), seed=0, marker="CD3", chunks=512, mpp=0.5, **kw):
    """A lazy synthetic H-DAB slide and its true-cell mask: (rgb, mask)."""
    return SyntheticTissue(seed, mpp).render_ihc(shape, marker, chunks=chunks, **kw)
