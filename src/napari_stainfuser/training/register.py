"""Registering an IHC section onto its serial H&E section, globally and per tile.

Serial sections share their hematoxylin: H&E's nuclei and the IHC's
counterstain. Everything here aligns hematoxylin density
(:func:`~.coarse_mask.hematoxylin_density`, smoothed), never the colours,
which differ by design.

The global fit (:func:`register_sections`, :func:`register_slides`) works on
both sections downscaled to the same pixel size, ``WORK_SIZE`` px on the long
side:

1. the rotation is searched every ``ANGLE_STEP`` degrees over the full circle
   at ``COARSE_SIZE`` px, with the IHC scaled by the square root of the ratio
   of the two tissue areas and, at each angle, the translation found by
   cross-correlation (:func:`skimage.registration.phase_cross_correlation`);
2. the best few angles are refined by maximising the normalised
   cross-correlation (NCC) of the two hematoxylin images over the transform's
   parameters (Gauss-Newton on the correlation coefficient, Evangelidis &
   Psarakis' ECC, implemented here), at ``COARSE_SIZE``, then half of
   ``WORK_SIZE``, then ``WORK_SIZE``.

Models: ``"affine"`` (default), ``"similarity"`` (rotation, uniform scale,
translation) and ``"rigid"`` (rotation and translation in level-0 pixels;
right only when both slides have the same µm/px). Sections shrink unevenly
when cut and mounted: on the rat-kidney pair in ``tests/data/he-ihc-serial``
the least-squares fit to nine hand-picked landmarks leaves 7.8 px mean error
for a similarity and 2.9 px for an affine map (scales 0.97 and 0.91 along
x and y), so affine is the default. A mirrored section (flipped on the glass)
is out of scope: no model here has a reflection.

The score is the NCC of the two hematoxylin images at ``WORK_SIZE`` over the
union of both tissue masks (:func:`tissue`), the IHC resampled into the H&E
frame; glass around the tissue would otherwise make any two centred sections
look alike. A fit scoring below ``MIN_SCORE`` is refused with a
:class:`~napari_stainfuser.errors.ParameterError`.

Per tile, :func:`local_shift` refines the global fit by a translation found by
cross-correlating the hematoxylin of the tile and its neighbourhood, and
:func:`ncc` of the two tiles' :func:`hematoxylin` scores the result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import ParameterError, opt

WORK_SIZE = 512
COARSE_SIZE = 128
ANGLE_STEP = 6.0
# Angles kept from the coarse search for refinement: the two sides of a
# symmetric organ score alike at low resolution.
CANDIDATES = 3
# Below this the two images share no more structure than unrelated ones.
# Measured: the rat-kidney serial pair scores 0.72 registered (0.50 laid
# centre on centre); either kidney section against each unrelated H&E or IHC
# image in tests/data/he and tests/data/ihc 0.05 to 0.45 (tissue fills most of
# those, so some fit somewhere); against noise 0.08, a blank image 0. Set on
# one real pair: a weaker pair can be fitted with a lower ``min_score``.
MIN_SCORE = 0.5
TISSUE_OD = 0.05  # decadic optical density of the darkest channel: see tissue()
SMOOTH_SIGMA = 1.0  # px of each working image: removes JPEG noise, keeps the tissue's texture
MODELS = ("affine", "similarity", "rigid")
# Gauss-Newton steps per image size (long side; 12 for a smaller WORK image);
# each candidate angle gets the coarse count, the best of them the rest. On
# the rat-kidney pair the fit has converged by WORK_SIZE: its steps there
# change the mean landmark error by less than 0.1 px.
_ECC_ITERATIONS = {COARSE_SIZE: 10, WORK_SIZE // 2: 20, WORK_SIZE: 4}
_ECC_TOL_PX = 0.02  # stop when an update moves no image corner by more than this


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _rotation_scale(angle: float, scale: float) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def level_to_level0(downsample) -> np.ndarray:
    """The 3×3 map of pixel (x, y) of a level with ``downsample`` (a number, or (dy, dx))
    to level-0 (x, y), pixel centres on pixel centres."""
    dy, dx = _pair(downsample)
    return np.array([[dx, 0.0, (dx - 1) / 2], [0.0, dy, (dy - 1) / 2], [0.0, 0.0, 1.0]])


def _pair(downsample) -> tuple[float, float]:
    return (float(downsample),) * 2 if np.isscalar(downsample) else tuple(map(float, downsample))


@dataclass(frozen=True, eq=False)
class Registration:
    """Where each H&E pixel lies on the IHC section.

    matrix: 3×3, maps H&E level-0 pixel coordinates (x, y) = (column, row) to
        IHC level-0 pixel coordinates, as ``skimage.transform`` does.
    score: NCC of the hematoxylin images after registration (module docstring).
    unregistered_score: the same for the two sections laid centre on centre,
        unrotated and unscaled (:meth:`unregistered`).
    model: "affine", "similarity" or "rigid".
    he_shape, ihc_shape: level-0 (height, width) of each section.
    work_pixel: H&E level-0 pixels per pixel of the images the fit ran on; its
        error is of the order of one such pixel (local refinement searches
        a few of them).
    """

    matrix: np.ndarray
    score: float
    unregistered_score: float
    model: str
    he_shape: tuple[int, int]
    ihc_shape: tuple[int, int]
    work_pixel: float = 1.0

    def __post_init__(self):
        matrix = np.array(self.matrix, dtype=np.float64)
        if matrix.shape != (3, 3):
            raise ParameterError(f"{opt('matrix')} must be 3×3, got shape {matrix.shape}")
        matrix.flags.writeable = False  # frozen means the matrix too
        object.__setattr__(self, "matrix", matrix)

    @property
    def transform(self):
        """The map as a :class:`skimage.transform.AffineTransform`."""
        from skimage.transform import AffineTransform

        return AffineTransform(matrix=self.matrix)

    def unregistered(self) -> Registration:
        """The baseline: the IHC laid centre on centre over the H&E, unrotated and unscaled."""
        (hh, hw), (ih, iw) = self.he_shape, self.ihc_shape
        centred = _translation((iw - hw) / 2, (ih - hh) / 2)
        return dataclasses.replace(self, matrix=centred, score=self.unregistered_score)

    def level_matrix(self, he_downsample=1.0, ihc_downsample=1.0) -> np.ndarray:
        """The map from pixels of an H&E level to pixels of an IHC level."""
        return (
            np.linalg.inv(level_to_level0(ihc_downsample))
            @ self.matrix
            @ level_to_level0(he_downsample)
        )

    def warp_region(
        self,
        ihc,
        *,
        y: int,
        x: int,
        height: int,
        width: int,
        he_downsample=1.0,
        ihc_downsample=1.0,
        shift: tuple[float, float] = (0.0, 0.0),
    ) -> np.ndarray:
        """The IHC resampled onto H&E rows ``[y, y + height)``, columns ``[x, x + width)``.

        ``ihc`` is an IHC level (numpy or dask, Y×X×3 uint8) whose downsample
        from level 0 is ``ihc_downsample``; ``y``, ``x`` count pixels of the
        H&E level with ``he_downsample``. ``shift`` (dy, dx) is a local
        correction from :func:`local_shift`: the H&E content at p matches the
        IHC of p - shift. Only the IHC window under the region is read;
        pixels off the IHC section are white. Bilinear; height×width×3 uint8.
        """
        from skimage.transform import warp

        dy, dx = shift
        out_to_ihc = self.level_matrix(he_downsample, ihc_downsample) @ _translation(x - dx, y - dy)
        corners = np.array(
            [[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]]
        )
        pts = (out_to_ihc @ corners.T)[:2]
        ih, iw = ihc.shape[:2]
        x0, y0 = (max(0, int(np.floor(v)) - 1) for v in pts.min(axis=1))
        x1 = min(iw, int(np.ceil(pts[0].max())) + 2)
        y1 = min(ih, int(np.ceil(pts[1].max())) + 2)
        if x0 >= x1 or y0 >= y1:
            return np.full((height, width, 3), 255, np.uint8)
        window = np.asarray(ihc[y0:y1, x0:x1])
        out = warp(
            window,
            _translation(-x0, -y0) @ out_to_ihc,
            output_shape=(height, width),
            order=1,
            cval=255.0,
            preserve_range=True,
        )
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    @property
    def rotation_deg(self) -> float:
        """The rotation part of the map, in degrees (counter-clockwise in (x, y) with y down)."""
        return float(np.degrees(np.arctan2(self.matrix[1, 0], self.matrix[0, 0])))

    def describe(self) -> dict:
        """JSON-ready summary: matrix, model, rotation, scales, both scores."""
        t = self.transform
        return {
            "matrix": np.asarray(self.matrix).tolist(),
            "maps": "H&E level-0 pixel (x, y) to IHC level-0 pixel (x, y)",
            "model": self.model,
            "rotation_deg": self.rotation_deg,
            "scale_xy": [float(s) for s in np.atleast_1d(t.scale)],
            "translation_xy": [float(v) for v in t.translation],
            "score": self.score,
            "unregistered_score": self.unregistered_score,
            "score_is": "NCC of hematoxylin density over the union of both tissue masks",
            "he_shape": list(self.he_shape),
            "ihc_shape": list(self.ihc_shape),
            "work_pixel": self.work_pixel,
        }


@dataclass(frozen=True)
class _Section:
    """One section at the working pixel size."""

    h: np.ndarray  # smoothed hematoxylin density
    tissue: np.ndarray  # bool
    to_level0: np.ndarray  # working pixel (x, y) -> level-0 (x, y)
    shape0: tuple[int, int]  # level-0 (height, width)


def hematoxylin(rgb: np.ndarray, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """Smoothed hematoxylin density (float32) of an H×W×3 uint8 image."""
    from .coarse_mask import hematoxylin_density

    h = np.maximum(hematoxylin_density(rgb), 0.0)
    return ndimage.gaussian_filter(h, sigma) if sigma > 0 else h


def tissue(rgb: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """H×W bool: where an H×W×3 uint8 image is not near-white glass.

    A pixel is tissue where its largest channel optical density,
    ``log10(255 / value)``, smoothed by a Gaussian of ``sigma`` px, exceeds
    ``TISSUE_OD``. Glass scans at about 0.02; the pale counterstain of an IHC
    section at about 0.08 (rat-kidney PanCK), which the package's Otsu-based
    :func:`~napari_stainfuser.stain.tissue_mask` takes for glass: at 512 px it
    finds 8 % tissue on that section, this rule 61 % (and 66 % on its H&E).
    """
    rgb = np.asarray(rgb)
    od = np.log10(255.0 / np.maximum(rgb.min(axis=-1), 1).astype(np.float32))
    if sigma > 0:
        od = ndimage.gaussian_filter(od, sigma)
    return od > TISSUE_OD


def section_hematoxylin(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hematoxylin, tissue) of a section overview: :func:`hematoxylin` less its
    median on glass (clipped at 0), and :func:`tissue`.

    Glass goes to 0, as everything off the section does when it is resampled:
    otherwise the section's border would be an edge to align, and a blank
    image would correlate with a section.
    """
    h, where = hematoxylin(rgb), tissue(rgb)
    if not where.all():
        h = np.maximum(h - np.median(h[~where]), 0.0)
    return h.astype(np.float32), where


def _section(rgb, downsample, pixel: float) -> _Section:
    from skimage.transform import rescale

    rgb = np.asarray(rgb)
    dy, dx = _pair(downsample)
    factor = float(np.sqrt(dy * dx)) / pixel
    if factor < 1.0:
        small = rescale(
            rgb.astype(np.float32), factor, channel_axis=2, anti_aliasing=True, preserve_range=True
        )
        rgb_small = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    else:
        rgb_small = rgb
    sy = rgb.shape[0] * dy / rgb_small.shape[0]
    sx = rgb.shape[1] * dx / rgb_small.shape[1]
    shape0 = (round(rgb.shape[0] * dy), round(rgb.shape[1] * dx))
    h, where = section_hematoxylin(rgb_small)
    return _Section(h, where, level_to_level0((sy, sx)), shape0)


def _warp(image: np.ndarray, matrix: np.ndarray, shape) -> np.ndarray:
    from skimage.transform import warp

    return warp(image, matrix, output_shape=shape, order=1, cval=0.0, preserve_range=True)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else 0.0


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation (Pearson's r) of two same-shaped arrays; 0 if either is flat."""
    return _ncc(np.asarray(a, np.float64), np.asarray(b, np.float64))


def _union_score(he: _Section, ihc: _Section, m: np.ndarray) -> float:
    """NCC over the union of the tissue masks, ``m`` mapping H&E working px to IHC working px."""
    moved = _warp(ihc.h, m, he.h.shape)
    their_tissue = _warp(ihc.tissue.astype(np.float32), m, he.h.shape) > 0.5
    where = he.tissue | their_tissue
    if where.sum() < 16:
        return 0.0
    return _ncc(he.h[where].astype(np.float64), moved[where])


def _shrink(image: np.ndarray, factor: float) -> np.ndarray:
    from skimage.transform import rescale

    return rescale(image, factor, anti_aliasing=True, preserve_range=True).astype(np.float32)


def _scaled(m: np.ndarray, factor: float) -> np.ndarray:
    """``m`` (between images at one scale) for images scaled by ``factor``."""
    s = level_to_level0(1.0 / factor)  # scaled px -> original px
    return np.linalg.inv(s) @ m @ s


def _angle_search(a: np.ndarray, b: np.ndarray, scale: float) -> list[tuple[float, np.ndarray]]:
    """(NCC, matrix) of each searched angle, best first; matrices map a's px to b's px."""
    from skimage.registration import phase_cross_correlation

    side = int(np.ceil(1.1 * np.hypot(*a.shape)))
    ca = np.array([a.shape[1], a.shape[0]]) / 2
    cb = np.array([b.shape[1], b.shape[0]]) / 2
    canvas_to_a = _translation(*(ca - side / 2))
    a_canvas = _warp(a, canvas_to_a, (side, side))
    found = []
    for angle in np.arange(0.0, 360.0, ANGLE_STEP):
        m0 = _translation(*cb) @ _rotation_scale(np.radians(angle), scale) @ _translation(*-ca)
        b_canvas = _warp(b, m0 @ canvas_to_a, (side, side))
        if not b_canvas.any() or not a_canvas.any():
            continue
        # Plain cross-correlation: at this size the tissue outline is the signal,
        # and phase normalisation would weigh its faint texture as much.
        (sy, sx), _, _ = phase_cross_correlation(a_canvas, b_canvas, normalization=None)
        m = m0 @ _translation(-sx, -sy)
        found.append((_ncc(a, _warp(b, m, a.shape)), m))
    found.sort(key=lambda t: -t[0])
    return found


def _distinct(found, n: int) -> list[np.ndarray]:
    """The best ``n`` matrices whose rotations differ by more than two search steps."""
    kept: list[np.ndarray] = []
    for _, m in found:
        ang = np.arctan2(m[1, 0], m[0, 0])
        if all(
            abs(np.angle(np.exp(1j * (ang - np.arctan2(k[1, 0], k[0, 0])))))
            > np.radians(2 * ANGLE_STEP)
            for k in kept
        ):
            kept.append(m)
        if len(kept) == n:
            break
    return kept


def _steepest(model: str, m: np.ndarray, x, y, wx, wy) -> np.ndarray:
    """(k, N): the change of the warped image per unit of each parameter of ``model``.

    ``wx``, ``wy`` are the moving image's gradients at the warped positions of
    the fixed pixels (x, y). Affine parameters are the six entries of ``m``;
    similarity ones (a, b, tx, ty) of ``[[a, -b, tx], [b, a, ty]]``; rigid
    ones the angle and the translation, the scale staying fixed.
    """
    if model == "affine":
        return np.stack([x * wx, y * wx, wx, x * wy, y * wy, wy])
    if model == "similarity":
        return np.stack([x * wx + y * wy, x * wy - y * wx, wx, wy])
    c, s = m[0, 0], m[1, 0]  # cos and sin times the scale
    return np.stack([(-s * x - c * y) * wx + (c * x - s * y) * wy, wx, wy])


def _updated(model: str, m: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``m`` moved by the parameter step ``p`` (parameters as in :func:`_steepest`)."""
    if model == "affine":
        return m + np.vstack([p.reshape(2, 3), np.zeros(3)])
    if model == "similarity":
        a, b, tx, ty = p
        return m + np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 0.0]])
    out = m.copy()
    theta, scale = np.arctan2(m[1, 0], m[0, 0]), np.hypot(m[0, 0], m[1, 0])
    out[:2, :2] = _rotation_scale(theta + p[0], scale)[:2, :2]
    out[:2, 2] += p[1:]
    return out


def _ecc(a: np.ndarray, b: np.ndarray, m: np.ndarray, model: str, iterations: int) -> np.ndarray:
    """Refine ``m`` (a's px -> b's px) to maximise NCC(a, b∘m), by Gauss-Newton (ECC).

    Each step linearises the warped image in the parameters, and takes the
    step that maximises the linearised correlation coefficient (Evangelidis &
    Psarakis 2008, forward-additive form). Stops when a step moves no image
    corner by more than ``_ECC_TOL_PX``, or when the step would lower the
    correlation (images uncorrelated or not overlapping).
    """
    gy, gx = np.gradient(b.astype(np.float32))
    h, w = a.shape
    # All float64: a float32 @ float64 product misses BLAS and is tens of times slower.
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    x, y = xs.ravel(), ys.ravel()
    t = a.ravel().astype(np.float64)
    t -= t.mean()
    corners = np.array([[0, w - 1, 0, w - 1], [0, 0, h - 1, h - 1], [1, 1, 1, 1]], float)
    for _ in range(iterations):
        iw = _warp(b, m, a.shape).ravel()
        wx = _warp(gx, m, a.shape).ravel()
        wy = _warp(gy, m, a.shape).ravel()
        g = _steepest(model, m, x, y, wx, wy)
        g -= g.mean(axis=1, keepdims=True)
        iw = iw - iw.mean()
        hess, gi, gt = g @ g.T, g @ iw, g @ t
        try:
            hinv_gi = np.linalg.solve(hess, gi)
            hinv_gt = np.linalg.solve(hess, gt)
        except np.linalg.LinAlgError:
            break  # a flat image: nothing to align
        denom = float(t @ iw) - float(gt @ hinv_gi)
        if denom <= 0:
            break
        lam = (float(iw @ iw) - float(gi @ hinv_gi)) / denom
        new = _updated(model, m, lam * hinv_gt - hinv_gi)
        moved = np.abs((new - m) @ corners).max()
        m = new
        if moved < _ECC_TOL_PX:
            break
    return m


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise ParameterError(f"{opt('model')} {model!r} is unknown; valid: {', '.join(MODELS)}")


def register_sections(
    he_rgb,
    ihc_rgb,
    *,
    he_downsample=1.0,
    ihc_downsample=1.0,
    model: str = "affine",
    min_score: float = MIN_SCORE,
    names: tuple[str, str] = ("the H&E image", "the IHC image"),
) -> Registration:
    """Register an IHC image onto its serial H&E image (see the module docstring).

    ``he_rgb`` and ``ihc_rgb`` are H×W×3 uint8 overviews of each section;
    ``*_downsample`` (a number, or (dy, dx)) is how many level-0 pixels each
    overview pixel covers, so the returned matrix maps level-0 pixels.
    Raises ParameterError naming ``names`` when the best fit scores below
    ``min_score``.
    """
    from ..stain.tissue import check_rgb

    _check_model(model)
    he_rgb, ihc_rgb = check_rgb(he_rgb, names[0]), check_rgb(ihc_rgb, names[1])
    sizes0 = [
        max(img.shape[0] * d[0], img.shape[1] * d[1])
        for img, d in ((he_rgb, _pair(he_downsample)), (ihc_rgb, _pair(ihc_downsample)))
    ]
    # One pixel size for both, and neither image upsampled.
    pixel = max(max(sizes0) / WORK_SIZE, *_pair(he_downsample), *_pair(ihc_downsample))
    he = _section(he_rgb, he_downsample, pixel)
    ihc = _section(ihc_rgb, ihc_downsample, pixel)
    centred = _translation(
        (ihc.h.shape[1] - he.h.shape[1]) / 2, (ihc.h.shape[0] - he.h.shape[0]) / 2
    )
    work = _fit(he, ihc, model)
    score = _union_score(he, ihc, work)
    reg = Registration(
        ihc.to_level0 @ work @ np.linalg.inv(he.to_level0),
        score,
        _union_score(he, ihc, centred),
        model,
        he.shape0,
        ihc.shape0,
        pixel,
    )
    if not score >= min_score:
        raise ParameterError(
            f"{names[0]} and {names[1]} cannot be registered: hematoxylin correlation "
            f"{score:.2f} after the best {model} fit (need at least {min_score:g})"
        )
    return reg


def _fit(he: _Section, ihc: _Section, model: str) -> np.ndarray:
    """The best map from H&E working px to IHC working px: angle search, then ECC."""
    long_side = max(he.h.shape)
    sizes = [s for s in sorted(_ECC_ITERATIONS) if s < long_side] + [long_side]
    coarse = min(1.0, COARSE_SIZE / long_side)
    a, b = _shrink(he.h, coarse), _shrink(ihc.h, coarse)
    area_he, area_ihc = he.tissue.sum(), ihc.tissue.sum()
    scale = 1.0
    # The area ratio only seeds the search; a factor beyond 2 would mean the
    # overviews' downsamples are wrong, not that the sections differ.
    if model != "rigid" and area_he and area_ihc:
        scale = float(np.clip(np.sqrt(area_ihc / area_he), 0.5, 2.0))
    found = _angle_search(a, b, scale)
    if not found:
        return _translation(0.0, 0.0)
    starts = _distinct(found, CANDIDATES)
    refined = [_ecc(a, b, m, model, _ECC_ITERATIONS[COARSE_SIZE]) for m in starts]
    best = max(refined, key=lambda m: _ncc(a, _warp(b, m, a.shape)))
    best = _scaled(best, 1.0 / coarse)
    for size in sizes[1:]:
        f = size / long_side
        a = he.h if f == 1.0 else _shrink(he.h, f)
        b = ihc.h if f == 1.0 else _shrink(ihc.h, f)
        m = _ecc(a, b, _scaled(best, f), model, _ECC_ITERATIONS.get(size, 12))
        best = _scaled(m, 1.0 / f)
    return best


def register_slides(
    he, ihc, *, model: str = "affine", min_score: float = MIN_SCORE
) -> Registration:
    """Register two slides (paths or :class:`~napari_stainfuser.slide.Slide`) on overviews.

    Each is read at its finest pyramid level of at most 2048 px
    (:func:`~napari_stainfuser.stain.slide_overview`); errors name both files.
    """
    from ..slide import open_slide
    from ..stain import slide_overview

    he_slide = he if hasattr(he, "levels") else open_slide(he)
    ihc_slide = ihc if hasattr(ihc, "levels") else open_slide(ihc)
    he_img, _, he_down = slide_overview(he_slide)
    ihc_img, _, ihc_down = slide_overview(ihc_slide)
    return register_sections(
        he_img,
        ihc_img,
        he_downsample=he_down,
        ihc_downsample=ihc_down,
        model=model,
        min_score=min_score,
        names=(str(he_slide.path.name), str(ihc_slide.path.name)),
    )


def local_shift(he_h: np.ndarray, ihc_h: np.ndarray, max_shift: float) -> tuple[float, float]:
    """The translation (dy, dx) that best aligns two same-sized regions; (0, 0) if none does.

    ``he_h``, ``ihc_h``: :func:`hematoxylin` of the H&E region and of the
    IHC resampled into its frame (by :meth:`Registration.warp_region`); the
    H&E content at p matches the IHC at p - shift. The shift is the peak of
    the cross-correlation (means removed, each region tapered by a Hann
    window so that its edges do not correlate), to a quarter pixel. It is
    kept only when it is within ``max_shift`` px and raises the NCC over the
    region; otherwise the global fit stands.

    Plain, not phase-normalised, correlation: phase normalisation weighs
    every frequency alike, and at tile scale the fine texture of two serial
    sections differs (they hold different cells); on the rat-kidney pair, in
    64 px tiles centred on nine hand-picked landmarks, it moved them away
    from their match (mean error 4.9 px against 2.9 px for the global fit
    alone), plain correlation towards it (2.4 px).
    """
    from skimage.registration import phase_cross_correlation

    a, b = np.asarray(he_h, np.float64), np.asarray(ihc_h, np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0, 0.0
    hann = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    shift, _, _ = phase_cross_correlation(
        (a - a.mean()) * hann, (b - b.mean()) * hann, upsample_factor=4, normalization=None
    )
    if not np.hypot(*shift) <= max_shift:
        return 0.0, 0.0
    moved = ndimage.shift(b, shift, order=1, mode="nearest")
    if _ncc(a, moved) <= _ncc(a, b):
        return 0.0, 0.0
    return float(shift[0]), float(shift[1])
