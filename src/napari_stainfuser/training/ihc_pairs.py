"""``stainfuser make-ihc-pairs``: registered (H&E, IHC, mask) tiles from two serial sections.

The IHC slide is registered onto the H&E slide (:mod:`.register`: a global
affine fit of the hematoxylin on overviews, then a translation per tile); the
H&E is cut on a grid at pyramid level ``level`` and each kept tile is written
with the IHC resampled into its frame and a coarse DAB mask of that IHC tile.
"""

import csv
import io
import numbers
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_bytes_atomic, write_json_atomic
from ..errors import ParameterError, opt
from .register import (
    Registration,
    hematoxylin,
    local_shift,
    ncc,
    section_hematoxylin,
    tissue,
)
from .tileio import write_png, write_text

IHC_PAIRS_LAYOUT = """\
OUT/he/NAME.png             H&E tile, tile×tile RGB, cut from pyramid level `level`
OUT/ihc/NAME.png            the IHC resampled into the same frame (global fit + the tile's shift)
OUT/mask/NAME.png           coarse DAB mask of the IHC tile, 8-bit grey, 0 or 255 (always
                            written here; optional for readers of such a set)
OUT/manifest.csv            one row per grid tile, kept or skipped, and why (MANIFEST_FIELDS)
OUT/registration.json       the global transform, its scores with and without registration,
                            the marker, the parameters and the input files
OUT/overlay.png             hematoxylin of the H&E (magenta) and of the registered IHC (green),
                            kept tiles outlined green, skipped tissue tiles red
OUT/overlay-unregistered.png  the same two laid centre on centre, unregistered

NAME is <H&E file stem>_L<level>_y<row>_x<column>, the tile's top-left pixel at that level.
"""

MANIFEST_NAME = "manifest.csv"
REGISTRATION_NAME = "registration.json"
MANIFEST_FIELDS = (
    "name",
    "he_y",
    "he_x",
    "level",
    "tile",
    "tissue",  # tissue fraction of the H&E tile (register.tissue on the overview)
    "global_score",  # hematoxylin NCC of the tile under the global fit alone
    "local_score",  # ... after the tile's own shift: what min_score is compared with
    "unregistered_score",  # ... with the IHC laid centre on centre
    "shift_y",  # the tile's shift (level px) on top of the global fit
    "shift_x",
    "mask_fraction",  # DAB-positive fraction of the mask
    "status",  # kept | skipped
    "reason",  # why skipped: background, or poor local registration
)
# A tile's hematoxylin NCC needs structure the two sections share (tissue
# edges, lumens, vessels); uniform parenchyma scores low even when aligned,
# since serial sections hold different cells. On the rat-kidney pair (64 px
# tiles, tests/training/test_ihc_registration.py) tissue tiles score a median
# 0.18 after registration and 0.05 laid centre on centre; 0.1 keeps about
# three quarters of them.
MIN_LOCAL_SCORE = 0.1
OVERLAY_SIZE = 768  # long side of the overlays
# Levels up to this many pixels are read into memory once, instead of per tile.
_IN_MEMORY_PX = 16 << 20


@dataclass(frozen=True)
class IHCPairsResult:
    """What :func:`make_ihc_pairs` made."""

    out: Path
    manifest: Path
    kept: int
    skipped: dict[str, int]  # reason -> tiles
    registration: Registration = field(repr=False)


class _Level:
    """One pyramid level, sliceable like an array; read whole when small."""

    def __init__(self, slide, level: int):
        self.slide, self.level = slide, level
        self.shape = tuple(slide.levels[level].shape)
        self._pixels = None
        if self.shape[0] * self.shape[1] <= _IN_MEMORY_PX:
            self._pixels = np.asarray(slide.levels[level])

    def __getitem__(self, index):
        rows, cols = index
        if self._pixels is not None:
            return self._pixels[rows, cols]
        y0, y1, _ = rows.indices(self.shape[0])
        x0, x1, _ = cols.indices(self.shape[1])
        return self.slide.read_region(y=y0, x=x0, height=y1 - y0, width=x1 - x0, level=self.level)

    def padded(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        """Rows [y, y + height), columns [x, x + width), white beyond the level's edges."""
        out = np.full((height, width, 3), 255, np.uint8)
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + height, self.shape[0]), min(x + width, self.shape[1])
        if y0 < y1 and x0 < x1:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self[slice(y0, y1), slice(x0, x1)]
        return out


def _check(marker, tile, level, min_tissue, min_score, mask_params):
    from .coarse_mask import CoarseMaskParams

    if not isinstance(marker, str) or not marker.strip():
        raise ParameterError(f"{opt('marker')} must name the IHC marker (e.g. CD3), got {marker!r}")
    if any(c in marker for c in "/\\:") or marker.strip() in (".", ".."):
        raise ParameterError(f"{opt('marker')} {marker!r} must not contain path separators")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 16:
        raise ParameterError(f"{opt('tile')} must be a whole number of at least 16, got {tile!r}")
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise ParameterError(f"{opt('level')} must be a whole number >= 0, got {level!r}")
    for name, value, low in (("min_tissue", min_tissue, 0.0), ("min_score", min_score, -1.0)):
        if not isinstance(value, numbers.Real) or not low <= value <= 1.0:
            raise ParameterError(f"{opt(name)} must be a number in [{low:g}, 1], got {value!r}")
    try:
        return CoarseMaskParams(**(mask_params or {}))
    except TypeError:
        valid = ", ".join(CoarseMaskParams.__dataclass_fields__)
        raise ParameterError(
            f"{opt('mask_params')} {sorted(mask_params)} has an unknown key; valid: {valid}"
        ) from None


def _ihc_level(slide, wanted: float) -> int:
    """The coarsest IHC level at least as fine as ``wanted`` level-0 px per pixel."""
    fine_enough = [k for k, d in enumerate(slide.downsamples) if d <= wanted * 1.01]
    return max(fine_enough) if fine_enough else 0


def _old_kept(manifest: Path) -> set[str]:
    if not manifest.is_file():
        return set()
    with open(manifest, newline="", encoding="utf-8") as fh:
        return {r["name"] for r in csv.DictReader(fh) if r.get("status") == "kept"}


def make_ihc_pairs(
    he,
    ihc,
    out,
    *,
    marker: str,
    tile: int = 256,
    level: int = 0,
    min_tissue: float = 0.5,
    min_score: float = MIN_LOCAL_SCORE,
    mask_params: dict | None = None,
    overwrite: bool = False,
    registration: Registration | None = None,
    progress=None,
) -> IHCPairsResult:
    """Write registered H&E/IHC training tiles of two serial sections into ``out``.

    ``he``, ``ihc``: any files :func:`~napari_stainfuser.slide.open_slide`
    reads (SVS, TIFF, OME-Zarr, PNG, JPEG). The layout written is
    ``IHC_PAIRS_LAYOUT``. A grid tile is skipped when

    - its tissue fraction is below ``min_tissue`` ("background"; tissue is
      :func:`.register.tissue` of the H&E overview: not near-white glass);
    - its hematoxylin NCC after the local shift (:func:`.register.local_shift`,
      searched within a quarter tile, or three pixels of the global fit if
      that is more) is below ``min_score`` ("poor local registration").

    ``mask_params`` are keywords of :func:`.coarse_mask.coarse_mask`. A
    folder that already holds a manifest is refused unless ``overwrite``;
    then tiles of the old run that this one does not keep are deleted, so
    the folder always matches its manifest. Every file is written
    atomically. ``registration``: a global fit of these two slides made
    earlier (:func:`.register.register_slides`), to cut another level or
    tile size without fitting again. ``progress``: True draws a bar on
    stderr, a callable gets :class:`~napari_stainfuser.progress.Progress`
    reports (phase "tiles").
    Raises ParameterError (naming both files) when the sections cannot be
    registered (:data:`.register.MIN_SCORE`; a pair that scores lower but
    is known to match can be fitted by :func:`.register.register_slides` with
    a lower ``min_score`` and passed as ``registration``).
    """
    from ..slide import open_slide
    from ..stain import TissueMask, slide_overview
    from .register import register_sections

    params = _check(marker, tile, level, min_tissue, min_score, mask_params)
    out = Path(out)
    manifest = out / MANIFEST_NAME
    if manifest.exists() and not overwrite:
        raise ParameterError(
            f"{out}: already holds IHC pairs ({MANIFEST_NAME}); "
            f"pass {opt('overwrite', True)} to replace them"
        )
    old_kept = _old_kept(manifest)
    he_slide, ihc_slide = open_slide(he), open_slide(ihc)
    if level >= len(he_slide.levels):
        raise ParameterError(
            f"{he_slide.path.name}: {opt('level', level)} does not exist "
            f"(it has levels 0..{len(he_slide.levels) - 1})"
        )
    he_view, _, he_view_down = slide_overview(he_slide)
    ihc_view, _, ihc_view_down = slide_overview(ihc_slide)
    reg = registration or register_sections(
        he_view,
        ihc_view,
        he_downsample=he_view_down,
        ihc_downsample=ihc_view_down,
        names=(he_slide.path.name, ihc_slide.path.name),
    )
    if (tuple(reg.he_shape), tuple(reg.ihc_shape)) != (he_slide.shape[:2], ihc_slide.shape[:2]):
        raise ParameterError(
            f"{opt('registration')} was made for slides of {reg.he_shape} and {reg.ihc_shape} px, "
            f"not {he_slide.path.name} and {ihc_slide.path.name}"
        )
    he_down = he_slide.downsamples[level]
    ihc_scale = float(np.sqrt(abs(np.linalg.det(reg.matrix[:2, :2]))))
    ihc_k = _ihc_level(ihc_slide, he_down * ihc_scale)
    he_lv, ihc_lv = _Level(he_slide, level), _Level(ihc_slide, ihc_k)
    ihc_down = ihc_slide.downsamples[ihc_k]
    margin = max(tile // 4, int(np.ceil(3 * reg.work_pixel / he_down)))
    where = {"he_downsample": he_down, "ihc_downsample": ihc_down}
    glass = TissueMask(tissue(he_view), he_view_down)

    h, w = he_lv.shape[:2]
    grid = [(y, x) for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)]
    if not grid:
        raise ParameterError(
            f"{he_slide.path.name}: level {level} is {w}×{h} px, smaller than {opt('tile', tile)}"
        )
    stem = "".join(
        c if c.isalnum() or c in "-_." else "_" for c in he_slide.path.name.split(".")[0]
    )
    step = _progress(progress, len(grid))
    rows = []
    for y, x in grid:
        name = f"{stem}_L{level}_y{y}_x{x}"
        row = {"name": name, "he_y": y, "he_x": x, "level": level, "tile": tile}
        box = (y * he_down, x * he_down, (y + tile) * he_down, (x + tile) * he_down)
        row["tissue"] = round(float(glass.region(*box).mean()), 4)
        if row["tissue"] < min_tissue:
            rows.append({**row, "status": "skipped", "reason": "background"})
        else:
            fit, (he_tile, ihc_tile) = _fit_tile(reg, he_lv, ihc_lv, y, x, tile, margin, where)
            row.update(fit)
            if row["local_score"] < min_score:
                rows.append({**row, "status": "skipped", "reason": "poor local registration"})
            else:
                row["mask_fraction"] = _write_pair(out, name, he_tile, ihc_tile, params)
                rows.append({**row, "status": "kept", "reason": ""})
        step()

    kept = {r["name"] for r in rows if r["status"] == "kept"}
    for stale in old_kept - kept:
        for sub in ("he", "ihc", "mask"):
            (out / sub / f"{stale}.png").unlink(missing_ok=True)
    _write_manifest(manifest, rows)
    skipped = dict(Counter(r["reason"] for r in rows if r["status"] == "skipped"))
    record = {
        "marker": marker.strip(),
        "registration": reg.describe(),
        "inputs": {"he": _describe(he_slide), "ihc": _describe(ihc_slide)},
        "parameters": {
            "tile": tile,
            "level": level,
            "ihc_level": ihc_k,
            "min_tissue": min_tissue,
            "min_score": min_score,
            "search_margin": margin,
            "mask": params.describe(),
        },
        "tiles": {"grid": len(grid), "kept": len(kept), "skipped": skipped},
    }
    write_json_atomic(out / REGISTRATION_NAME, record)
    _write_overlays(out, reg, he_view, he_view_down, ihc_view, ihc_view_down, rows, he_down)
    return IHCPairsResult(out, manifest, len(kept), skipped, reg)


def _describe(slide) -> dict:
    return {"path": str(slide.path.resolve()), "shape": list(slide.shape), "mpp": slide.mpp}


def _fit_tile(reg, he_lv, ihc_lv, y, x, tile, margin, where) -> tuple[dict, tuple]:
    """(manifest fields, (H&E tile, registered IHC tile)) of one tissue tile."""
    size = tile + 2 * margin
    inner = (slice(margin, margin + tile),) * 2
    he_ctx = he_lv.padded(y - margin, x - margin, size, size)
    ihc_ctx = reg.warp_region(ihc_lv, y=y - margin, x=x - margin, height=size, width=size, **where)
    # The tile's hematoxylin is cut from its context's, so each is computed once.
    he_h, ihc_h = hematoxylin(he_ctx), hematoxylin(ihc_ctx)
    centred = reg.unregistered().warp_region(ihc_lv, y=y, x=x, height=tile, width=tile, **where)
    shift = local_shift(he_h, ihc_h, max_shift=margin)
    ihc_tile = reg.warp_region(ihc_lv, y=y, x=x, height=tile, width=tile, shift=shift, **where)
    fields = {
        "global_score": round(ncc(he_h[inner], ihc_h[inner]), 4),
        "local_score": round(ncc(he_h[inner], hematoxylin(ihc_tile)), 4),
        "unregistered_score": round(ncc(he_h[inner], hematoxylin(centred)), 4),
        "shift_y": round(shift[0], 2),
        "shift_x": round(shift[1], 2),
    }
    return fields, (he_ctx[inner], ihc_tile)


def _write_pair(out: Path, name: str, he_tile, ihc_tile, params) -> float:
    """Write one kept tile's three files; returns its mask's DAB-positive fraction."""
    mask = _mask(ihc_tile, params)
    write_png(out / "he" / f"{name}.png", he_tile)
    write_png(out / "ihc" / f"{name}.png", ihc_tile)
    write_bytes_atomic(out / "mask" / f"{name}.png", _png_grey(mask))
    return round(float(mask.mean()), 4)


def _mask(ihc_tile: np.ndarray, params) -> np.ndarray:
    from dataclasses import asdict

    from .coarse_mask import NoDABWarning, coarse_mask

    # A tile without DAB is an expected negative, recorded as mask_fraction 0,
    # not a warning per tile.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDABWarning)
        return coarse_mask(ihc_tile, **asdict(params))


def _png_grey(mask: np.ndarray) -> bytes:
    import imagecodecs

    return imagecodecs.png_encode(np.where(mask, 255, 0).astype(np.uint8))


def _write_manifest(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def _progress(progress, total: int):
    """A no-argument callable advancing the bar or the callback by one tile."""
    if progress is True:
        import sys

        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="tile", desc="tiles", file=sys.stderr)

        def step():
            bar.update(1)
            if bar.n >= total:
                bar.close()

        return step
    if callable(progress):
        from ..progress import Tracker

        tracker = Tracker("tiles", total, 0, progress)
        return lambda: tracker.add(1)
    return lambda: None


def _h_channel(rgb: np.ndarray) -> np.ndarray:
    """Hematoxylin scaled to [0, 1] by its 99th percentile on tissue, glass at 0."""
    h, where = section_hematoxylin(rgb)
    top = np.percentile(h[where], 99) if where.any() else 0.0
    return np.clip(h / top, 0.0, 1.0) if top > 0 else np.zeros_like(h)


def _write_overlays(out, reg, he_view, he_down, ihc_view, ihc_down, rows, tile_down) -> None:
    from skimage.draw import rectangle_perimeter
    from skimage.transform import rescale

    factor = min(1.0, OVERLAY_SIZE / max(he_view.shape[:2]))
    if factor < 1.0:
        small = rescale(
            he_view.astype(np.float32),
            factor,
            channel_axis=2,
            anti_aliasing=True,
            preserve_range=True,
        )
        he_small = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    else:
        he_small = he_view
    hy, hx = (he_down, he_down) if np.isscalar(he_down) else he_down
    down = (he_view.shape[0] * hy / he_small.shape[0], he_view.shape[1] * hx / he_small.shape[1])
    he_h = _h_channel(he_small)
    for name, r in (("overlay.png", reg), ("overlay-unregistered.png", reg.unregistered())):
        ihc_small = r.warp_region(
            ihc_view, y=0, x=0, height=he_small.shape[0], width=he_small.shape[1],
            he_downsample=down, ihc_downsample=ihc_down,
        )  # fmt: skip
        ihc_h = _h_channel(ihc_small)
        img = (np.stack([he_h, ihc_h, he_h], axis=-1) * 255).astype(np.uint8)
        if r is reg:
            for row in rows:
                if row["reason"] == "background":
                    continue
                colour = (0, 255, 0) if row["status"] == "kept" else (255, 0, 0)
                # Inset by a pixel, so that neighbouring outlines do not overlap.
                y0 = row["he_y"] * tile_down / down[0] + 1
                x0 = row["he_x"] * tile_down / down[1] + 1
                y1 = (row["he_y"] + row["tile"]) * tile_down / down[0] - 2
                x1 = (row["he_x"] + row["tile"]) * tile_down / down[1] - 2
                rr, cc = rectangle_perimeter((y0, x0), end=(y1, x1), shape=img.shape[:2], clip=True)
                img[rr, cc] = colour
        write_png(out / name, img)
