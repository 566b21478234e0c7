"""Virtual IHC against real IHC: image, DAB and cell-mask metrics per tile, and their table.

:func:`tile_metrics` gives one row per tile with the columns of
:data:`COLUMNS`; :func:`evaluate_rows` appends their mean,
:func:`write_metrics_csv` saves them and :func:`format_table` prints the mean
beside the trivial baselines of :func:`baseline_metrics`.

Definitions (masks are H×W bool; "empty" means no True pixel):

- ``psnr``, ``ssim``: :func:`skimage.metrics.peak_signal_noise_ratio` and
  :func:`skimage.metrics.structural_similarity` (its default 7×7 uniform
  window, ``channel_axis=-1``) on the uint8 RGB tiles, ``data_range=255``,
  over the whole tile. Identical tiles have PSNR ``inf``.
- ``dab_dice``, ``dab_iou``, ``dab_hd95``: :func:`mask_metrics` between the
  coarse DAB masks (:func:`~napari_stainfuser.training.coarse_mask.coarse_mask`,
  same parameters for both) of the real and the virtual tile.
- ``dab_pearson``: Pearson correlation of the real and virtual DAB densities
  over tissue pixels; NaN when either is constant there or fewer than two
  pixels are tissue. Tissue is the given mask or, by default, every pixel of
  the real tile whose darkest channel is below :data:`GLASS_LEVEL` (glass
  transmits nearly all light in every channel; any stain absorbs in at least one).
- ``mask_dice``, ``mask_iou``: :func:`mask_metrics` of the predicted against
  the true cell mask; NaN unless both are given.

Edge cases of :func:`mask_metrics`: Dice and IoU of two empty masks are 1.0
(perfect agreement that nothing is there). HD95 of two empty masks is 0.0;
when exactly one is empty it is NaN (no surface to measure from), so means
skip that tile rather than mixing in an arbitrary distance.
"""

import csv
import io
import math

import numpy as np
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ..atomic import write_bytes_atomic
from ..errors import ParameterError, opt
from ..training.coarse_mask import CoarseMaskParams, as_rgb_uint8, dab_density, mask_from_density

COLUMNS = (
    "name",
    "psnr",
    "ssim",
    "dab_dice",
    "dab_iou",
    "dab_hd95",
    "dab_pearson",
    "mask_dice",
    "mask_iou",
)
METRICS = COLUMNS[1:]

# A pixel of the real IHC is glass when every channel is at least this bright
# (decadic optical density below 0.064 in every channel).
GLASS_LEVEL = 220

# skimage's SSIM window is 7×7 by default.
_MIN_SIDE = 7

NAN = float("nan")


def as_mask(mask, name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``mask`` as H×W bool (nonzero is True); a wrong shape or dtype raises naming ``name``."""
    arr = np.asarray(mask)
    if arr.ndim != 2 or not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
        raise ParameterError(
            f"{opt(name)} must be an H×W bool or integer mask, got {arr.dtype} of shape {arr.shape}"
        )
    if shape is not None and arr.shape != tuple(shape):
        raise ParameterError(f"{opt(name)} has shape {arr.shape}, expected {tuple(shape)}")
    return arr != 0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A|+|B|) of two bool masks; 1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union |A∩B| / |A∪B| of two bool masks; 1.0 when both are empty."""
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else int(np.logical_and(a, b).sum()) / union


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it; the image edge counts as outside."""
    cross = ndimage.generate_binary_structure(2, 1)
    return mask & ~ndimage.binary_erosion(mask, cross, border_value=0)


def hd95(a: np.ndarray, b: np.ndarray) -> float:
    """95th percentile Hausdorff distance between two bool masks, in pixels.

    The distances from every boundary pixel (:func:`boundary`) of ``a`` to
    the nearest boundary pixel of ``b``, and from ``b``'s to ``a``'s, pooled;
    their 95th percentile (numpy's linear interpolation). Euclidean distances
    come from ``scipy.ndimage.distance_transform_edt``. Both empty: 0.0; one
    empty: NaN.
    """
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return NAN
    ea, eb = boundary(a), boundary(b)
    # EDT of the complement: each pixel's distance to the nearest boundary pixel.
    to_b = ndimage.distance_transform_edt(~eb)[ea]
    to_a = ndimage.distance_transform_edt(~ea)[eb]
    return float(np.percentile(np.concatenate([to_b, to_a]), 95))


def mask_metrics(predicted, true) -> dict[str, float]:
    """``dice``, ``iou`` and ``hd95`` of a predicted mask against a true one (same shape)."""
    t = as_mask(true, "true_mask")
    p = as_mask(predicted, "predicted_mask", t.shape)
    return {"dice": dice(p, t), "iou": iou(p, t), "hd95": hd95(p, t)}


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equal-length 1-D samples; NaN if either is constant or n < 2."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.size < 2:
        return NAN
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    if sxx == 0.0 or syy == 0.0:
        return NAN
    return float(np.clip((dx @ dy) / math.sqrt(sxx * syy), -1.0, 1.0))


def tissue_of(real_ihc: np.ndarray) -> np.ndarray:
    """The default tissue mask: pixels of the real IHC darker than :data:`GLASS_LEVEL` somewhere."""
    return real_ihc.min(axis=2) < GLASS_LEVEL


def tile_metrics(
    real_ihc,
    virtual_ihc,
    *,
    predicted_mask=None,
    true_mask=None,
    tissue=None,
    mask_params: CoarseMaskParams | None = None,
) -> dict[str, float]:
    """The metrics of one virtual IHC tile against its real IHC (definitions: module docstring).

    ``real_ihc`` and ``virtual_ihc`` are H×W×3 uint8 of the same shape, at
    least 7 px a side. ``predicted_mask`` and ``true_mask`` are cell masks of
    one shape; ``tissue`` is H×W. Returns the :data:`METRICS` as floats.
    """
    real = as_rgb_uint8(real_ihc, "real_ihc")
    virtual = as_rgb_uint8(virtual_ihc, "virtual_ihc")
    if virtual.shape != real.shape:
        raise ParameterError(
            f"{opt('virtual_ihc')} has shape {virtual.shape}, {opt('real_ihc')} {real.shape}"
        )
    if min(real.shape[:2]) < _MIN_SIDE:
        raise ParameterError(
            f"{opt('real_ihc')} of shape {real.shape} is too small (SSIM needs {_MIN_SIDE} px a side)"
        )
    hw = real.shape[:2]
    tissue = tissue_of(real) if tissue is None else as_mask(tissue, "tissue", hw)
    if mask_params is not None and not isinstance(mask_params, CoarseMaskParams):
        raise ParameterError(
            f"{opt('mask_params')} must be a CoarseMaskParams, got {type(mask_params).__name__}"
        )

    with np.errstate(divide="ignore"):  # identical tiles: PSNR is inf, not a warning
        psnr = float(peak_signal_noise_ratio(real, virtual, data_range=255))
    ssim = float(structural_similarity(real, virtual, channel_axis=-1, data_range=255))

    dab_real, dab_virtual = dab_density(real), dab_density(virtual)
    dab = mask_metrics(
        mask_from_density(dab_virtual, mask_params), mask_from_density(dab_real, mask_params)
    )

    if predicted_mask is not None and true_mask is not None:
        cells = mask_metrics(predicted_mask, true_mask)
    else:
        cells = {"dice": NAN, "iou": NAN}
    return {
        "psnr": psnr,
        "ssim": ssim,
        "dab_dice": dab["dice"],
        "dab_iou": dab["iou"],
        "dab_hd95": dab["hd95"],
        "dab_pearson": pearson(dab_real[tissue], dab_virtual[tissue]),
        "mask_dice": cells["dice"],
        "mask_iou": cells["iou"],
    }


def baseline_metrics(true_mask, *, prefix: str = "mask") -> dict[str, dict[str, float]]:
    """Dice, IoU and HD95 of the all-negative and all-positive masks against ``true_mask``.

    Keys are ``"all-negative"`` and ``"all-positive"``; each holds
    ``{prefix}_dice``, ``{prefix}_iou`` and ``{prefix}_hd95``, so with
    ``prefix="mask"`` (cell masks) or ``"dab"`` (the real tile's coarse DAB
    mask) they line up with the table's columns. A model is only useful where
    it beats both.
    """
    t = as_mask(true_mask, "true_mask")
    out = {}
    for label, fill in (("all-negative", False), ("all-positive", True)):
        m = mask_metrics(np.full(t.shape, fill), t)
        out[label] = {f"{prefix}_{k}": v for k, v in m.items()}
    return out


def nanmean(values: list[float]) -> float:
    """The mean of the values that are not NaN (NaN if none is), without numpy's warning."""
    finite_or_inf = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite_or_inf)) if finite_or_inf else NAN


def evaluate_rows(rows: list[dict]) -> list[dict]:
    """``rows`` followed by a row named ``mean``: the mean of each metric, NaNs left out.

    A metric that is NaN (or missing) in every row has a NaN mean.
    """
    mean = {"name": "mean"}
    for key in METRICS:
        mean[key] = nanmean([float(r[key]) for r in rows if key in r])
    return [*rows, mean]


def write_metrics_csv(path, rows: list[dict]) -> None:
    """Write ``rows`` as CSV with the :data:`COLUMNS` (others are left out), atomically.

    Floats are written in full (``repr``), NaN as ``nan``; a missing metric is an empty cell.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        cells = [str(row.get("name", ""))]
        cells += [repr(float(row[k])) if k in row else "" for k in METRICS]
        writer.writerow(cells)
    write_bytes_atomic(path, buf.getvalue().encode("utf-8"))


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    v = float(value)
    if math.isnan(v):
        return "nan"
    return f"{v:.2f}" if key in ("psnr", "dab_hd95") else f"{v:.4f}"


def format_table(rows: list[dict], baselines: dict[str, dict] | None = None) -> str:
    """A short text table: the mean of ``rows`` and, below it, each baseline.

    ``rows`` are tile rows, with or without the ``mean`` row of
    :func:`evaluate_rows` at the end; ``baselines`` maps a label to metric
    values (as from :func:`baseline_metrics`); a column it lacks shows ``-``.
    """
    tiles = [r for r in rows if r.get("name") != "mean"]
    mean = next((r for r in rows if r.get("name") == "mean"), None) or evaluate_rows(tiles)[-1]
    lines = [(f"mean of {len(tiles)}", mean)]
    lines += list((baselines or {}).items())
    label_w = max(len(label) for label, _ in lines)
    widths = [max(len(k), 8) for k in METRICS]
    out = [" ".join([" " * label_w, *(k.rjust(w) for k, w in zip(METRICS, widths, strict=True))])]
    for label, values in lines:
        cells = [_cell(k, values.get(k)).rjust(w) for k, w in zip(METRICS, widths, strict=True)]
        out.append(" ".join([label.ljust(label_w), *cells]))
    return "\n".join(out)
