"""How one slide level is cut into tiles for one stainer, and put back together.

A :class:`TilePlan` is the single description shared by the interactive path
(lazy results through the engine) and by whole-slide batch runs, so both give
the same pixels. It decides:

- the working resolution: when the level's µm/px differs from the stainer's,
  tiles are cut from the level resampled to the stainer's resolution and the
  result is resampled back, so the output overlays the input;
- the tile grid: the stainer's tile size and overlap (or the caller's), with no
  overlap at all for per-pixel stainers, whose output then cannot depend on
  the tiling;
- which tiles hold tissue: only those reach the stainer;
- each tile's initial noise for diffusion stainers, cut from one noise field
  indexed by slide coordinates at latent resolution;
- how stained tiles become output: blended with windows that sum to one,
  resampled back if needed, and switched per pixel with the tissue mask so
  glass passes through unchanged.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from ..errors import ParameterError, opt
from ..stainer import StainerSpec
from .grid import TileGrid, check_tiling, pad_to, read_region, read_tile
from .noise import FIELD_VERSION, NOISE_MODES, NoiseField, per_tile_noise
from .resample import resample_region, scale_factor, scaled_shape, source_window
from .tissue import TissueSwitch
from .windows import WINDOWS, blend_region


def resolve_tiling(spec: StainerSpec, tile: int | None, overlap: int | None) -> tuple[int, int]:
    """The (tile, overlap) a run uses, checked against what the stainer can take."""
    tile, overlap = check_tiling(
        spec.tile_size if tile is None else tile, spec.overlap if overlap is None else overlap
    )
    m = max(1, spec.multiple_of)
    if tile % m:
        raise ParameterError(
            f"{opt('tile')}: {tile} is not a multiple of {m}, which this stainer needs"
        )
    if spec.per_pixel:
        # Per-pixel output does not depend on neighbours: overlap would only cost time.
        return tile, 0
    f = spec.latent_factor or 1
    if overlap % f:
        raise ParameterError(
            f"{opt('overlap')}: {overlap} is not a multiple of {f}; "
            "tiles must start on the latent grid"
        )
    return tile, overlap


class TilePlan:
    """Tiles of one image (a slide level) for one stainer.

    Parameters
    ----------
    image:
        Y×X×3 uint8 array (dask or numpy), one slide level.
    spec:
        The stainer's :class:`~napari_stainfuser.stainer.StainerSpec`.
    tile, overlap:
        Override the stainer's preferred tiling (see :func:`resolve_tiling`).
    mpp:
        µm/px of ``image``; with the stainer's ``spec.mpp`` it sets the
        working resolution. None: work at the image's resolution.
    tissue:
        A :class:`TissueSwitch` for the slide, or None to stain everything.
    seed, noise:
        Noise for diffusion stainers: ``"field"`` cuts every tile's noise from
        one field indexed by slide coordinates; ``"per_tile"`` draws each
        tile's own (only to measure what the field buys).
    window:
        Blending window kind (see :mod:`.windows`).
    """

    def __init__(
        self,
        image,
        spec: StainerSpec,
        *,
        tile: int | None = None,
        overlap: int | None = None,
        mpp: float | None = None,
        tissue: TissueSwitch | None = None,
        seed: int = 0,
        noise: str = "field",
        window: str = "cosine",
    ):
        if len(image.shape) != 3 or image.shape[2] != 3:
            raise ParameterError(f"image: expected Y×X×3, got shape {tuple(image.shape)}")
        if noise not in NOISE_MODES:
            raise ParameterError(f"noise: {noise!r} is unknown; valid: {', '.join(NOISE_MODES)}")
        if window not in WINDOWS:
            raise ParameterError(f"window: {window!r} is unknown; valid: {', '.join(WINDOWS)}")
        self.image = image
        self.shape = (int(image.shape[0]), int(image.shape[1]))
        self.spec = spec
        self.tile, self.overlap = resolve_tiling(spec, tile, overlap)
        self.factor = scale_factor(mpp, spec.mpp)
        self.work_shape = (
            self.shape if self.factor == 1.0 else scaled_shape(self.shape, self.factor)
        )
        self.grid = TileGrid(self.work_shape, self.tile, self.overlap)
        self.tissue = tissue
        self.seed = int(seed)
        self.noise_mode = noise
        self.window = window
        self.field = NoiseField(self.seed, spec.latent_channels) if spec.latent_channels else None
        # Output pixels within this many pixels of a tile's footprint read it
        # when the result is resampled back.
        f = self.factor
        self._margin = 0 if f == 1.0 else math.ceil(max(1.0, f) / f) + 1
        self._tissue_cache: dict[tuple[int, int], bool] = {}
        self._zeros = np.zeros((self.tile, self.tile, 3), np.uint8)

    # -- what the plan is ----------------------------------------------------------

    @property
    def per_pixel(self) -> bool:
        return self.spec.per_pixel

    def describe(self) -> dict:
        """Everything that decides the output pixels besides the stainer and the input."""
        return {
            "shape": list(self.shape),
            "tile": self.tile,
            "overlap": self.overlap,
            "factor": self.factor,
            "window": self.window if self.overlap else None,
            "seed": self.seed if self.field is not None else None,
            "noise": self.noise_mode if self.field is not None else None,
            "noise_field_version": FIELD_VERSION if self.field is not None else None,
            "tissue": None if self.tissue is None else _mask_digest(self.tissue.mask),
        }

    # -- tiles -------------------------------------------------------------------------

    def footprint(self, r: int, c: int) -> tuple[int, int, int, int]:
        """The image box (y0, y1, x0, x1) whose output tile (r, c) can change."""
        y0, x0 = self.grid.origin(r, c)
        y1 = min(y0 + self.tile, self.work_shape[0])
        x1 = min(x0 + self.tile, self.work_shape[1])
        if self.factor == 1.0:
            return y0, y1, x0, x1
        f, m = self.factor, self._margin
        return (
            math.floor(y0 / f) - m,
            math.ceil(y1 / f) + m,
            math.floor(x0 / f) - m,
            math.ceil(x1 / f) + m,
        )

    def has_tissue(self, r: int, c: int) -> bool:
        """Whether tile (r, c) must go through the stainer."""
        if self.tissue is None:
            return True
        hit = self._tissue_cache.get((r, c))
        if hit is None:
            hit = self.tissue.any_in(self.shape, *self.footprint(r, c))
            self._tissue_cache[(r, c)] = hit
        return hit

    def tissue_tiles(self) -> list[tuple[int, int]]:
        """Tiles that hold tissue, in raster order."""
        return [rc for rc in self.grid.tiles() if self.has_tissue(*rc)]

    def tile_input(self, r: int, c: int) -> np.ndarray:
        """The tile × tile × 3 uint8 input of tile (r, c) at working resolution."""
        y0, x0 = self.grid.origin(r, c)
        if self.factor == 1.0:
            return read_tile(self.image, y0, x0, self.tile)
        y1 = min(y0 + self.tile, self.work_shape[0])
        x1 = min(x0 + self.tile, self.work_shape[1])
        region = resample_region(self.image, y0, y1, x0, x1, self.factor)
        return pad_to(region, self.tile, self.tile)

    def tile_noise(self, r: int, c: int) -> np.ndarray | None:
        """Initial latent noise of tile (r, c) (C × tile/f × tile/f), or None."""
        if self.field is None:
            return None
        f = self.spec.latent_factor or 1
        n = self.tile // f
        if self.noise_mode == "per_tile":
            return per_tile_noise(self.seed, r, c, self.field.channels, n, n)
        y0, x0 = self.grid.origin(r, c)
        return self.field.region(y0 // f, x0 // f, n, n)

    def load(self, r: int, c: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(input, noise) of tile (r, c): what the engine feeds the stainer."""
        return self.tile_input(r, c), self.tile_noise(r, c)

    # -- output --------------------------------------------------------------------------

    def _work_window(self, y0, y1, x0, x1):
        inv = 1.0 / self.factor
        wy0, wy1 = source_window(y0, y1, inv, self.work_shape[0])
        wx0, wx1 = source_window(x0, x1, inv, self.work_shape[1])
        return wy0, wy1, wx0, wx1

    def tiles_for(self, y0: int, y1: int, x0: int, x1: int) -> list[tuple[int, int]]:
        """Tissue tiles whose stained pixels the output box [y0, y1) × [x0, x1) needs."""
        if self.tissue is not None and not self.tissue.any_in(self.shape, y0, y1, x0, x1):
            return []
        box = (y0, y1, x0, x1) if self.factor == 1.0 else self._work_window(y0, y1, x0, x1)
        return [rc for rc in self.grid.tiles_in(*box) if self.has_tissue(*rc)]

    def assemble(
        self, y0: int, y1: int, x0: int, x1: int, get_tile, original: np.ndarray | None = None
    ) -> np.ndarray:
        """The output box [y0, y1) × [x0, x1) (image coordinates) as uint8.

        ``get_tile(r, c)`` returns the stained tile (tile × tile × 3 uint8); it
        is only called for tiles in :meth:`tiles_for`. A tile without tissue
        is never needed: every output pixel it touches is glass and is taken
        from the input. ``original``: the input pixels of the box, if the
        caller already has them (saves reading them again).
        """
        mask = None
        if self.tissue is not None:
            if not self.tissue.any_in(self.shape, y0, y1, x0, x1):
                return original if original is not None else read_region(self.image, y0, y1, x0, x1)
            mask = self.tissue.region(self.shape, y0, y1, x0, x1)

        def get(r, c):
            return get_tile(r, c) if self.has_tissue(r, c) else self._zeros

        out = self._blend(y0, y1, x0, x1, get, 3, np.uint8)
        if mask is not None and not mask.all():
            if original is None:
                original = read_region(self.image, y0, y1, x0, x1)
            out = np.where(mask[..., None], out, original)
        return out

    def assemble_rgba(self, y0: int, y1: int, x0: int, x1: int, get_tile) -> np.ndarray:
        """The output box as h×w×4 uint8 for a layer over the input: stained pixels
        opaque, glass transparent, so the input shows through where the output
        would copy it. Reads no input pixels (a viewer calls this on its UI thread)."""
        out = np.zeros((y1 - y0, x1 - x0, 4), np.uint8)
        if self.tissue is not None and not self.tissue.any_in(self.shape, y0, y1, x0, x1):
            return out

        def get(r, c):
            return get_tile(r, c) if self.has_tissue(r, c) else self._zeros

        out[..., :3] = self._blend(y0, y1, x0, x1, get, 3, np.uint8)
        if self.tissue is None:
            out[..., 3] = 255
        else:
            out[..., 3] = self.tissue.region(self.shape, y0, y1, x0, x1) * np.uint8(255)
        return out

    def assemble_extra(self, y0: int, y1: int, x0: int, x1: int, get_plane) -> np.ndarray:
        """An extra output (a cell-mask probability, an uncertainty) over the box, as
        h×w float32: blended and resampled back exactly as the image is, and 0 on glass.

        ``get_plane(r, c)`` returns tile (r, c)'s tile × tile float plane.
        """
        if self.tissue is not None and not self.tissue.any_in(self.shape, y0, y1, x0, x1):
            return np.zeros((y1 - y0, x1 - x0), np.float32)
        zeros = np.zeros((self.tile, self.tile, 1), np.float32)

        def get(r, c):
            if not self.has_tissue(r, c):
                return zeros
            return np.asarray(get_plane(r, c), np.float32).reshape(self.tile, self.tile, 1)

        out = self._blend(y0, y1, x0, x1, get, 1, np.float32)[..., 0]
        if self.tissue is not None:
            out = np.where(self.tissue.region(self.shape, y0, y1, x0, x1), out, np.float32(0))
        return out

    def _blend(self, y0, y1, x0, x1, get, channels: int, dtype) -> np.ndarray:
        if self.factor == 1.0:
            return blend_region(self.grid, y0, y1, x0, x1, get, self.window, channels, dtype)
        wy0, wy1, wx0, wx1 = self._work_window(y0, y1, x0, x1)
        work = blend_region(self.grid, wy0, wy1, wx0, wx1, get, self.window, channels, dtype)
        return resample_region(
            work, y0, y1, x0, x1, 1.0 / self.factor, self.work_shape, (wy0, wx0), dtype
        )


def _mask_digest(mask: np.ndarray) -> str:
    h = hashlib.sha256(np.packbits(mask).tobytes())
    h.update(str(mask.shape).encode())
    return h.hexdigest()[:16]
