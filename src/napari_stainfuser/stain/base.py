"""The shared machinery of the classical normalizers.

Each normalizer keeps two sets of statistics: the *target*'s (what the output
should look like; saved in presets) and the *source*'s (what the input looks
like). ``fit_source`` fixes the source statistics once for a whole slide, so
every tile is transformed with the same numbers; without it, ``transform``
estimates them from each image it is given (each image of a batch on its
own), which is what torchstain and tiatoolbox always do and what makes them
drift from tile to tile.

When source statistics are fixed and the input is uint8, the transform is a
lookup in a 256³ table built once from the method's per-pixel map
(:mod:`.lut`); float input, or uint8 input without fixed source statistics,
is computed directly by the same map. Subclasses implement only
``_estimate`` (pixels -> statistics) and ``_map`` (pixels -> pixels).
"""

import inspect
import json
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ParameterError, StainEstimationError
from ..stainer import StainerSpec, StainResult
from ._threads import run_all, single_threaded
from .density import DEFAULT_IO, check_io
from .lut import apply_lut, apply_lut_planar, apply_lut_torch, build_lut
from .presets import PRESET_FORMAT, PRESET_VERSION, check_state, read_preset
from .sampling import DEFAULT_MAX_PIXELS, describe, tissue_pixels
from .tissue import DEFAULT_MAX_SIDE

# Pixels per job of the direct computation: a few MB of float32 per plane,
# small enough to stay in cache and to spread over the workers.
_CHUNK = 1 << 18

State = dict[str, torch.Tensor]


def nearest_percentile(t: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-th percentile of a 1-D tensor without interpolation (the order
    statistic of rank ``1 + round(q/100 * (n - 1))``, as torchstain takes it)."""
    k = 1 + round(0.01 * float(q) * (t.numel() - 1))
    return t.kthvalue(k).values


def _check_number(value, name: str, lo: float, hi: float, *, lo_open=False, hi_open=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {value!r}") from None
    bad_lo = v <= lo if lo_open else v < lo
    bad_hi = v >= hi if hi_open else v > hi
    if not np.isfinite(v) or bad_lo or bad_hi:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ParameterError(f"{name} must be in {lb}{lo}, {hi}{rb}, got {value!r}")
    return v


def _check_int(value, name: str, lo: int, hi: int) -> int:
    """A whole number in [lo, hi]: 1.7 or "3" would be silently truncated or
    parsed, so only true integers (or integral floats, as JSON may give) pass."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok:
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    return int(_check_number(value, name, lo, hi))


class StainNormalizer:
    """Base class: fit a target, optionally fix the source, transform images.

    Common parameters:
        io: background (incident light) intensity for optical density.
        max_pixels: most tissue pixels a fit uses (a seeded random sample).
        max_side: longest side of the slide overview that slides are fitted on.
        min_tissue_pixels: fewer usable tissue pixels than this and the
            statistics are not estimated (:class:`StainEstimationError`).
        seed: seed for pixel sampling (and Vahadane's dictionary learning).
        lut: use the 256³ lookup table for uint8 input when source statistics
            are fixed; None (default) decides automatically (yes), False never.
        tile_size, batch_size, device: what :attr:`spec` reports to the tiler.
    """

    name: ClassVar[str] = ""
    # Names of the method-specific constructor parameters (saved in presets).
    method_params: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        io: float = DEFAULT_IO,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_side: int = DEFAULT_MAX_SIDE,
        min_tissue_pixels: int = 500,
        seed: int = 0,
        lut: bool | None = None,
        tile_size: int = 512,
        batch_size: int = 8,
        device: str = "cpu",
    ):
        self.io = check_io(io)
        self.max_pixels = _check_int(max_pixels, "max_pixels", 1, 1 << 30)
        self.max_side = _check_int(max_side, "max_side", 16, 1 << 20)
        self.min_tissue_pixels = _check_int(min_tissue_pixels, "min_tissue_pixels", 1, 1 << 30)
        self.seed = _check_int(seed, "seed", 0, (1 << 63) - 1)
        if lut not in (None, True, False):
            raise ParameterError(f"lut must be None, True or False, got {lut!r}")
        self.lut = lut
        self.tile_size = _check_int(tile_size, "tile_size", 1, 1 << 16)
        self.batch_size = _check_int(batch_size, "batch_size", 1, 1 << 16)
        self.device = str(device)
        self._lock = threading.Lock()
        self._table: np.ndarray | None = None
        self._device_tables: dict[str, torch.Tensor] = {}
        self._target_state: State | None = None
        self._source_state: State | None = None
        self.target_name: str | None = None
        self.source_name: str | None = None

    # Statistics may also be assigned directly (e.g. when a fitted normalizer is
    # rebuilt in another process); any assignment drops the lookup table.
    @property
    def target_state(self) -> State | None:
        """Target statistics (float64 CPU tensors), or None before fitting."""
        return self._target_state

    @target_state.setter
    def target_state(self, state: State | None) -> None:
        with self._lock:  # waits for a table build in progress
            self._target_state = state
            self._invalidate()

    @property
    def source_state(self) -> State | None:
        """Fixed (slide-level) source statistics, or None for per-image estimation."""
        return self._source_state

    @source_state.setter
    def source_state(self, state: State | None) -> None:
        with self._lock:  # waits for a table build in progress
            self._source_state = state
            self._invalidate()

    # -- what subclasses provide -------------------------------------------------

    def _estimate(self, pixels: torch.Tensor, name: str) -> State:
        """Statistics (float64 CPU tensors) from N×3 uint8 tissue pixels."""
        raise NotImplementedError

    def _map(self, rgb: torch.Tensor, src: State, tgt: State) -> torch.Tensor:
        """Planar pixels 3×N (uint8, or float32 on the 0..255 scale) to float32
        0..255 (3×N). Must be per-pixel: no statistic of ``rgb`` may be used."""
        raise NotImplementedError

    # -- parameters and protocol ---------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The method parameters a preset records."""
        out = {"io": self.io}
        for k in self.method_params:
            v = getattr(self, k)
            out[k] = v.tolist() if isinstance(v, np.ndarray) else v
        return out

    @property
    def spec(self) -> StainerSpec:
        return StainerSpec(
            tile_size=self.tile_size,
            overlap=0,
            mpp=None,
            per_pixel=True,
            deterministic=True,
            device=self.device,
            batch_size=self.batch_size,
        )

    def stain(self, tiles: torch.Tensor, noise: torch.Tensor | None = None) -> StainResult:
        """Stainer protocol: transform a B×3×H×W batch (``noise`` is ignored)."""
        return StainResult(self.transform(tiles))

    @property
    def is_fitted(self) -> bool:
        return self.target_state is not None

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return (
            f"{type(self).__name__}({p}; target={self.target_name!r}, source={self.source_name!r})"
        )

    # -- fitting -------------------------------------------------------------------

    def _fit_stats(self, source, name: str | None, default: str) -> tuple[State, str]:
        label = describe(source, name, default)
        px = tissue_pixels(
            source,
            name=label,
            max_pixels=self.max_pixels,
            max_side=self.max_side,
            seed=self.seed,
        )
        if len(px) < self.min_tissue_pixels:
            raise StainEstimationError(
                f"{label}: too little tissue to estimate stains "
                f"({len(px)} tissue pixels, need {self.min_tissue_pixels})"
            )
        state = single_threaded(self._estimate, torch.from_numpy(px), label)
        for k, v in state.items():
            if not torch.isfinite(v).all():
                raise StainEstimationError(f"{label}: stain statistic {k!r} is not finite")
        return state, label

    def fit(self, target, name: str | None = None) -> "StainNormalizer":
        """Fit the target statistics on an H×W×3 uint8 image, a list of them, or
        a slide (tissue pixels of its low-resolution overview). ``name`` is used
        in error messages (default: "target image", or the slide's path)."""
        state, label = self._fit_stats(target, name, "target image")
        with self._lock:
            self._target_state, self.target_name = state, label
            self._invalidate()
        return self

    def fit_source(self, source, name: str | None = None) -> "StainNormalizer":
        """Fix the source statistics once (per slide): afterwards every image or
        tile is transformed with these, never with its own."""
        state, label = self._fit_stats(source, name, "source image")
        with self._lock:
            self._source_state, self.source_name = state, label
            self._invalidate()
        return self

    def reset_source(self) -> "StainNormalizer":
        """Forget fixed source statistics (back to per-image estimation)."""
        with self._lock:
            self._source_state, self.source_name = None, None
            self._invalidate()
        return self

    def _invalidate(self) -> None:
        self._table = None
        self._device_tables = {}

    # -- transforming ----------------------------------------------------------------

    def transform(self, x):
        """Normalize an H×W×3 numpy image (uint8, or float in [0, 1]) or a
        B×3×H×W torch tensor (uint8, or float in [0, 1]); returns the same type,
        dtype, shape and device.

        Source statistics: the slide-level ones if :meth:`fit_source` was
        called (uint8 input then goes through the lookup table, bit-identical
        whatever the tiling); otherwise they are estimated from ``x`` itself,
        per image of a batch, and an image with too little tissue to estimate
        from is treated as already being in the target's stain.
        """
        if self.target_state is None:
            raise ParameterError(
                f"{self.name} normalizer has no target: call fit(target) or load a preset first"
            )
        if isinstance(x, torch.Tensor):
            return self._transform_torch(x)
        if isinstance(x, np.ndarray):
            return self._transform_numpy(x)
        raise ParameterError(
            f"x must be an H×W×3 numpy array or a B×3×H×W torch tensor, got {type(x).__name__}"
        )

    __call__ = transform

    def prepare(self) -> "StainNormalizer":
        """Build the lookup table now if source statistics are fixed (otherwise the
        first uint8 transform builds it): call before a timed or latency-sensitive
        pass. A no-op when the table is not used."""
        if self.target_state is not None and self._use_lut():
            self._lut()
        return self

    def _use_lut(self) -> bool:
        return self.source_state is not None and self.lut is not False

    def _lut(self) -> np.ndarray:
        with self._lock:
            if self._table is None:
                src, tgt = (
                    self._consts(self.source_state, "cpu"),
                    self._consts(self.target_state, "cpu"),
                )
                self._table = build_lut(lambda rgb: _to_uint8(self._map(rgb, src, tgt)))
            return self._table

    def _lut_on(self, device: torch.device) -> torch.Tensor:
        table = self._lut()
        key = str(device)
        with self._lock:
            if key not in self._device_tables:
                self._device_tables[key] = torch.from_numpy(table.view(np.int32)).to(device)
            return self._device_tables[key]

    @staticmethod
    def _consts(state: State, device) -> State:
        return {k: v.to(device=device, dtype=torch.float32) for k, v in state.items()}

    def _source_for(self, image_u8: np.ndarray) -> State:
        if self.source_state is not None:
            return self.source_state
        px = tissue_pixels(image_u8, max_pixels=self.max_pixels, seed=self.seed)
        if len(px) >= self.min_tissue_pixels:
            try:
                return single_threaded(self._estimate, torch.from_numpy(px), "image")
            except StainEstimationError:
                pass
        # Nothing to estimate (background, a single colour): treat the image as
        # already in the target's stain, so its few pixels pass nearly as is.
        return self.target_state

    def _direct(self, pixels: torch.Tensor, src: State) -> torch.Tensor:
        """Map N×3 pixels (uint8 or float 0..255) in bounded-memory chunks."""
        dev = pixels.device
        s, t = self._consts(src, dev), self._consts(self.target_state, dev)
        out = torch.empty(pixels.shape, dtype=torch.float32, device=dev)

        def job(i: int) -> None:
            with torch.inference_mode():
                planes = pixels[i : i + _CHUNK].T.contiguous()
                out[i : i + _CHUNK] = self._map(planes, s, t).T

        starts = range(0, pixels.shape[0], _CHUNK)
        if dev.type == "cpu":
            run_all(job, starts)
        else:
            for i in starts:
                job(i)
        return out

    def _transform_numpy(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ParameterError(f"x: expected an H×W×3 RGB image, got shape {x.shape}")
        if x.dtype == np.uint8:
            if x.size == 0:
                return x.copy()
            if self._use_lut():
                return apply_lut(self._lut(), x)
            src = self._source_for(x)
            flat = torch.from_numpy(np.ascontiguousarray(x).reshape(-1, 3))
            return _to_uint8(self._direct(flat, src)).numpy().reshape(x.shape)
        if np.issubdtype(x.dtype, np.floating):
            _check_unit_range(x, "x")
            if x.size == 0:
                return x.copy()
            scaled = (
                torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 3)) * 255.0
            )
            src = self._source_for(_quantize(scaled).numpy().reshape(x.shape))
            out = (self._direct(scaled, src) / 255.0).clamp_(0.0, 1.0)
            return out.numpy().reshape(x.shape).astype(x.dtype, copy=False)
        raise ParameterError(f"x: expected uint8 or float in [0, 1], got dtype {x.dtype}")

    def _transform_torch(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ParameterError(f"x: expected a B×3×H×W tensor, got shape {tuple(x.shape)}")
        is_float = x.is_floating_point()
        if not is_float and x.dtype != torch.uint8:
            raise ParameterError(f"x: expected uint8 or float in [0, 1], got dtype {x.dtype}")
        if is_float:
            _check_unit_range(x, "x")
        if x.numel() == 0:
            return x.clone()
        if not is_float and self._use_lut():
            if x.device.type == "cpu":
                return torch.from_numpy(apply_lut_planar(self._lut(), x.numpy()))
            return apply_lut_torch(self._lut_on(x.device), x)
        out = torch.empty_like(x)
        for b in range(x.shape[0]):
            hwc = x[b].permute(1, 2, 0)
            if is_float:
                px = hwc.reshape(-1, 3).to(torch.float32) * 255.0
                src = self._source_for(_quantize(px).cpu().numpy().reshape(hwc.shape))
                res = (self._direct(px, src) / 255.0).clamp_(0.0, 1.0).to(x.dtype)
            else:
                px = hwc.reshape(-1, 3)
                src = self._source_for(hwc.cpu().numpy())
                res = _to_uint8(self._direct(px, src))
            out[b] = res.reshape(hwc.shape).permute(2, 0, 1)
        return out

    # -- presets ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        if self.target_state is None:
            raise ParameterError(
                f"{self.name} normalizer has no target to save: call fit(target) first"
            )
        from .. import __version__

        return {
            "format": PRESET_FORMAT,
            "version": PRESET_VERSION,
            "method": self.name,
            "params": self.get_params(),
            "target": {k: v.tolist() for k, v in self.target_state.items()},
            "target_name": self.target_name,
            "napari_stainfuser": __version__,
        }

    def save(self, path) -> Path:
        """Write the fitted target as a small JSON stain preset (atomically)."""
        from ..atomic import write_bytes_atomic

        path = Path(path)
        write_bytes_atomic(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode("utf-8"))
        return path

    @classmethod
    def load(cls, path, **params) -> "StainNormalizer":
        """A fitted normalizer from a JSON stain preset written by :meth:`save`.

        On a method's class (``MacenkoNormalizer.load(path)``, or
        ``get_normalizer("macenko").load(path)``) the preset must be for that
        method; on :class:`StainNormalizer` itself any method's preset loads.
        ``params`` override the preset's parameters (e.g. device, tile_size).
        Returns a new normalizer; an instance it is called on is not changed.
        The preset is checked first (:func:`.presets.read_preset`).
        """
        preset = read_preset(path, method=cls.name or None)
        klass = cls if cls.name else _BY_NAME[preset["method"]]
        merged = {**preset["params"], **params}
        unknown = sorted(set(merged) - set(klass.parameter_names()))
        if unknown:
            raise ParameterError(
                f"{path}: unknown {klass.name} parameter {unknown[0]!r}; "
                f"valid: {', '.join(klass.parameter_names())}"
            )
        try:
            norm = klass(**merged)
        except ParameterError as e:
            raise ParameterError(f"{path}: {e}") from None
        # The Ruifrok matrix shape depends on the merged parameters: check again.
        norm.target_state = {
            k: torch.from_numpy(v)
            for k, v in check_state(norm.name, preset["target"], str(path), merged).items()
        }
        norm.target_name = preset["target_name"]
        return norm

    @classmethod
    def parameter_names(cls) -> list[str]:
        """Every keyword the constructor takes (the common ones and the method's)."""
        names = set()
        for klass in cls.__mro__:
            if klass is object or "__init__" not in vars(klass):
                continue
            sig = inspect.signature(klass.__init__)
            names |= {p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}
        return sorted(names)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.name:
            _BY_NAME[cls.name] = cls


# Method name -> class, filled as the method modules define their classes.
_BY_NAME: dict[str, type[StainNormalizer]] = {}


def _to_uint8(v: torch.Tensor) -> torch.Tensor:
    return v.add(0.5).floor_().clamp_(0.0, 255.0).to(torch.uint8)


def _quantize(scaled: torch.Tensor) -> torch.Tensor:
    return scaled.clamp(0.0, 255.0).add(0.5).floor_().to(torch.uint8)


def _check_unit_range(x, name: str) -> None:
    t = torch.as_tensor(x)
    if t.numel() == 0:
        return
    lo, hi = float(t.min()), float(t.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise ParameterError(
            f"{name}: float input must be in [0, 1] (got values in [{lo:.4g}, {hi:.4g}]); "
            "pass uint8 for 0..255 data"
        )
