"""Seam score: can the tile borders of a stitched image be seen?

The score is the mean absolute intensity step across the tile borders divided
by the mean absolute step across reference lines inside the tiles, taken in
the same direction: steps between rows for horizontal borders, between
columns for vertical ones. Tissue has the same texture at a border as
anywhere else, so the score is 1.0 when borders cannot be detected; a jump
in colour or in noise pattern at the borders pushes it up.

Borders are where a tiled run switches from one tile to the next. For a grid
with overlap, that is the middle of each overlap band: a hard cut lands there
and a blending ramp is steepest there, so blended and unblended outputs are
measured at the same lines. The reference lines sit half a tile step further
on, in the middle of each tile, so they share the borders' phase with any
periodic structure of the input (JPEG's 8×8 blocks, the scanner's tiles):
a block edge that happens to fall on every border also falls on every
reference line and cancels out. Without reference lines, every non-border
offset is the reference.

Blending two tiles that disagree in texture (independent noise) averages
them: the band is smoother than tissue and the score drops *below* one.
That is a visible seam too; compare ``abs(log(score))`` when both can happen.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError


def _lines(size, tile, overlap, factor, shift):
    if overlap >= tile:
        raise ParameterError(f"overlap: {overlap} must be smaller than the tile size {tile}")
    step = tile - overlap
    work_size = round(size * factor)
    out = []
    b = step + overlap // 2 + shift
    while b < work_size:
        pos = round(b / factor)
        if 0 < pos < size:
            out.append(pos)
        b += step
    return out


def grid_seams(size: int, tile: int, overlap: int = 0, factor: float = 1.0) -> list[int]:
    """Border positions along one axis of ``size`` output pixels for a tile grid.

    Position b means the border lies between pixel b-1 and pixel b. ``factor``
    is working pixels per output pixel when the tiles were cut at another
    resolution than the output (see :mod:`napari_stainfuser.tiling.resample`).
    """
    return _lines(size, tile, overlap, factor, 0)


def grid_references(size: int, tile: int, overlap: int = 0, factor: float = 1.0) -> list[int]:
    """Reference lines inside the tiles: half a tile step before each border,
    i.e. through the middle of every tile's own (non-overlapping) part."""
    return _lines(size, tile, overlap, factor, -((tile - overlap) // 2))


def grid_lines(size: int, tile: int, overlap: int = 0, factor: float = 1.0):
    """(borders, reference lines) along one axis; see :func:`seam_score`."""
    return grid_seams(size, tile, overlap, factor), grid_references(size, tile, overlap, factor)


def _steps(image: np.ndarray, axis: int) -> np.ndarray:
    """|I[k] - I[k-1]| along ``axis``, averaged over channels; index k-1 -> border k."""
    d = np.abs(np.diff(image.astype(np.float64), axis=axis))
    return d.mean(axis=2) if d.ndim == 3 else d


def seam_score(
    image,
    seams_y: list[int] | tuple[int, ...] = (),
    seams_x: list[int] | tuple[int, ...] = (),
    mask=None,
    inside_y: list[int] | tuple[int, ...] | None = None,
    inside_x: list[int] | tuple[int, ...] | None = None,
) -> float:
    """Seam score of an H×W[×C] image with borders at rows ``seams_y`` and
    columns ``seams_x`` (a border at b lies between pixels b-1 and b).

    ``inside_y`` / ``inside_x``: reference lines inside the tiles (see
    :func:`grid_lines`); None: every offset that is not a border.
    ``mask`` (H×W bool, optional) restricts the measurement to steps between
    two pixels inside the mask, e.g. tissue, so untouched background does not
    dilute the score.
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise ParameterError(f"image: expected H×W or H×W×C, got shape {img.shape}")
    h, w = img.shape[:2]
    seams_y = sorted({int(b) for b in seams_y})
    seams_x = sorted({int(b) for b in seams_x})
    if any(not 0 < b < h for b in seams_y) or any(not 0 < b < w for b in seams_x):
        raise ParameterError(f"seams: positions must lie strictly inside the image of {h}×{w}")
    if not seams_y and not seams_x:
        raise ParameterError("seams: need at least one border position")
    m = None if mask is None else np.asarray(mask, dtype=bool)
    if m is not None and m.shape != (h, w):
        raise ParameterError(f"mask: shape {m.shape} does not match the image's {(h, w)}")

    border_sum = border_n = 0.0
    inside_mean_weighted = 0.0
    refs = {0: inside_y, 1: inside_x}
    for axis, seams in ((0, seams_y), (1, seams_x)):
        if not seams:
            continue
        d = _steps(img, axis)
        valid = np.ones(d.shape, bool)
        if m is not None:
            valid = (m[1:] & m[:-1]) if axis == 0 else (m[:, 1:] & m[:, :-1])
        n = d.shape[axis]
        is_border = np.zeros(n, bool)
        is_border[np.asarray(seams) - 1] = True
        if refs[axis] is None:
            is_ref = ~is_border
        else:
            ref = [int(b) for b in refs[axis] if 0 < int(b) <= n]
            is_ref = np.zeros(n, bool)
            is_ref[np.asarray(ref, dtype=int) - 1] = True
            is_ref &= ~is_border
        sel = (slice(None), None) if axis == 0 else (None, slice(None))
        bmask = valid & is_border[sel]
        imask = valid & is_ref[sel]
        nb, ni = bmask.sum(), imask.sum()
        if nb == 0 or ni == 0:
            continue
        border_sum += d[bmask].sum()
        border_n += nb
        # Weight each direction's reference by how many border samples it has.
        inside_mean_weighted += d[imask].mean() * nb
    if border_n == 0:
        raise ParameterError("seams: no border samples fall inside the mask")
    inside = inside_mean_weighted / border_n
    if inside == 0:
        raise ParameterError("image: flat inside the tiles; the seam score is undefined")
    return float(border_sum / border_n / inside)
