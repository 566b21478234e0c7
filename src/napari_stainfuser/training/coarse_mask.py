"""Coarse DAB-positive masks from IHC images, by colour deconvolution and morphology.

A virtual-IHC model is trained and judged on where the brown DAB chromogen
lies; these masks are the cheap, label-free stand-in for cell annotations.

Stain densities are scikit-image's :func:`skimage.color.rgb2hed`: with
``I = max(rgb / 255, 1e-6)`` per channel, the optical density
``-ln(I) / ln(1e6)`` (natural-log OD scaled so that the darkest representable
pixel, ``I = 1e-6``, is 1; decadic OD is ``density * 6``) is projected on the
inverse of the Ruifrok–Johnston H-E-DAB matrix and clipped at 0. A density
of 0.07 is a decadic OD of 0.42 along the DAB direction.

:func:`coarse_mask` is this package's recipe (threshold, closing, opening,
small-object removal, optional hole filling); :func:`reference_mask` is the
published protocol of Kataria et al. (arXiv 2511.04615), implemented from its
description so the two can be compared (``tests/training/test_coarse_mask.py``).
"""

import inspect
import numbers
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.morphology import disk, remove_small_objects

from ..errors import ParameterError, opt

# The protocol of Kataria et al. (arXiv 2511.04615).
REFERENCE_THRESHOLD = 0.07
REFERENCE_ITERATIONS = 2
REFERENCE_MEDIAN_SIZE = 5

# scikit-image 0.26 renamed remove_small_objects' `min_size` (drop objects
# smaller than it) to `max_size` (drop objects up to and including it).
_HAS_MAX_SIZE = "max_size" in inspect.signature(remove_small_objects).parameters


class NoDABWarning(UserWarning):
    """An IHC image gave an empty coarse mask (no DAB signal, or only specks)."""


def as_rgb_uint8(image, name: str) -> np.ndarray:
    """``image`` as an H×W×3 uint8 array; anything else is a ParameterError naming ``name``."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or 0 in arr.shape:
        raise ParameterError(
            f"{opt(name)} must be an H×W×3 uint8 RGB image, got {arr.dtype} of shape {arr.shape}"
        )
    return arr


def dab_density(ihc_rgb) -> np.ndarray:
    """H×W float32 DAB density: channel 2 of ``skimage.color.rgb2hed`` (units: module docstring)."""
    return rgb2hed(as_rgb_uint8(ihc_rgb, "ihc_rgb"))[..., 2].astype(np.float32)


def hematoxylin_density(rgb) -> np.ndarray:
    """H×W float32 hematoxylin density: channel 0 of ``skimage.color.rgb2hed``.

    Hematoxylin stains nuclei in both H&E and IHC, so it is the channel the two
    stains share (what registration of serial sections aligns).
    """
    return rgb2hed(as_rgb_uint8(rgb, "rgb"))[..., 0].astype(np.float32)


def _check_number(name: str, value) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
        or value < 0
    ):
        raise ParameterError(f"{opt(name)} must be a non-negative number, got {value!r}")


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ParameterError(f"{opt(name)} must be a non-negative whole number, got {value!r}")


@dataclass(frozen=True)
class CoarseMaskParams:
    """The parameters of :func:`coarse_mask`, validated; :meth:`describe` records them.

    The defaults were chosen on the real images in ``tests/data`` (pixel sizes
    are those of ``ihc/skimage-ihc-fhl2.png``, whose nuclei measure a median
    7.5 × 16.6 px, 88 px², on its hematoxylin channel):

    - ``dab_threshold=0.07``: the published value (Kataria et al.). On the
      FHL2 image the DAB histogram has its background peak near 0.01 and its
      stained peak near 0.08, so 0.07 keeps the strongly stained membranes and
      cytoplasm (40 % of pixels). Lower thresholds admit eosin, which leaks
      into the DAB channel: on the real H&E ``he-ihc-serial/rat-kidney-HE.jpg``
      0.07 marks 0.8 % of pixels, 0.06 4 % and 0.05 14 %.
    - ``closing_radius=2``: above 0.07 the FHL2 staining is a lace of
      membranes; the pale gaps between them have a median half-width of 1.4 px
      (75 % are ≤ 2.2 px), so a radius-2 disk joins a cell's membranes into
      one region while the unstained nuclei (half-width ≈ 3.8 px) stay open.
    - ``opening_radius=1``: removes one- or two-pixel strands and JPEG noise;
      anything a radius-1 disk does not fit into is far thinner than a cell.
    - ``min_size=64``: connected regions (8-connected) smaller than about
      three quarters of a nucleus cannot be a stained cell and are dropped.
    - ``fill_holes=False``: nuclei inside DAB-positive cells are hematoxylin,
      not DAB, and lumens are glass, so holes are kept unless asked for.
    """

    dab_threshold: float = REFERENCE_THRESHOLD
    closing_radius: int = 2
    opening_radius: int = 1
    min_size: int = 64
    fill_holes: bool = False

    def __post_init__(self):
        _check_number("dab_threshold", self.dab_threshold)
        _check_count("closing_radius", self.closing_radius)
        _check_count("opening_radius", self.opening_radius)
        _check_count("min_size", self.min_size)
        if not isinstance(self.fill_holes, bool | np.bool_):
            raise ParameterError(
                f"{opt('fill_holes')} must be True or False, got {self.fill_holes!r}"
            )

    def describe(self) -> dict:
        """The parameters as plain JSON-ready values, with the density they threshold."""
        d = {k: v.item() if isinstance(v, np.generic) else v for k, v in asdict(self).items()}
        d["density"] = "skimage.color.rgb2hed channel 2 (DAB)"
        return d


def _close(mask: np.ndarray, radius: int) -> np.ndarray:
    # Outside the image counts as background while growing and as foreground
    # while shrinking, so the image edge neither adds to nor eats into the mask.
    fp = disk(radius).astype(bool)
    grown = ndimage.binary_dilation(mask, fp, border_value=0)
    return ndimage.binary_erosion(grown, fp, border_value=1)


def _open(mask: np.ndarray, radius: int) -> np.ndarray:
    fp = disk(radius).astype(bool)
    shrunk = ndimage.binary_erosion(mask, fp, border_value=1)
    return ndimage.binary_dilation(shrunk, fp, border_value=0)


def _drop_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 1:
        return mask  # every region has at least one pixel
    size = {"max_size": min_size - 1} if _HAS_MAX_SIZE else {"min_size": min_size}
    return remove_small_objects(mask, connectivity=2, **size)


def mask_from_density(dab: np.ndarray, params: CoarseMaskParams | None = None) -> np.ndarray:
    """The coarse mask of a DAB density map (:func:`dab_density`); empty masks pass silently.

    For callers that already hold the density (the IHC metrics reuse it for
    their correlation); :func:`coarse_mask` is the same on an RGB image.
    """
    p = params or CoarseMaskParams()
    mask = np.asarray(dab) > p.dab_threshold
    if p.closing_radius:
        mask = _close(mask, int(p.closing_radius))
    if p.opening_radius:
        mask = _open(mask, int(p.opening_radius))
    mask = _drop_small(mask, int(p.min_size))
    if p.fill_holes:
        # Background touching the image edge is not a hole and stays.
        mask = ndimage.binary_fill_holes(mask)
    return mask


def coarse_mask(
    ihc_rgb,
    *,
    dab_threshold: float = CoarseMaskParams.dab_threshold,
    closing_radius: int = CoarseMaskParams.closing_radius,
    opening_radius: int = CoarseMaskParams.opening_radius,
    min_size: int = CoarseMaskParams.min_size,
    fill_holes: bool = CoarseMaskParams.fill_holes,
) -> np.ndarray:
    """H×W bool mask of DAB-positive tissue in an H×W×3 uint8 IHC image.

    Steps: DAB density (:func:`dab_density`) above ``dab_threshold``;
    closing, then opening, with disks of the given radii (0 skips a step);
    removal of 8-connected regions of fewer than ``min_size`` pixels; and, if
    ``fill_holes``, filling of holes not connected to the image edge. The
    defaults and why they were chosen: :class:`CoarseMaskParams`.

    An empty result (no DAB signal, or only specks the morphology removes)
    warns with :class:`NoDABWarning` and returns an all-False mask.
    """
    params = CoarseMaskParams(dab_threshold, closing_radius, opening_radius, min_size, fill_holes)
    dab = dab_density(ihc_rgb)
    mask = mask_from_density(dab, params)
    if not mask.any():
        if not (dab > params.dab_threshold).any():
            why = f"no pixel has DAB density above {opt('dab_threshold', params.dab_threshold)}"
        else:
            why = "the only DAB signal is in specks that the morphology removes"
        warnings.warn(f"no DAB signal found: {why}; the mask is empty", NoDABWarning, stacklevel=2)
    return mask


def reference_mask(ihc_rgb) -> np.ndarray:
    """H×W bool DAB mask by the protocol of Kataria et al. (arXiv 2511.04615).

    Exactly: DAB density (``skimage.color.rgb2hed`` channel 2) strictly above
    0.07; binary dilation with a 3×3 square of ones, twice; binary erosion
    with the same element, twice (dilate, dilate, erode, erode: a closing);
    then a 5×5 median filter (``scipy.ndimage.median_filter``, edges
    mirrored). Pixels outside the image never change the result: background
    for the dilations, foreground for the erosions. No warning on an empty mask.
    """
    mask = dab_density(ihc_rgb) > REFERENCE_THRESHOLD
    square = np.ones((3, 3), bool)
    for _ in range(REFERENCE_ITERATIONS):
        mask = ndimage.binary_dilation(mask, square, border_value=0)
    for _ in range(REFERENCE_ITERATIONS):
        mask = ndimage.binary_erosion(mask, square, border_value=1)
    return ndimage.median_filter(mask.astype(np.uint8), size=REFERENCE_MEDIAN_SIZE) > 0
