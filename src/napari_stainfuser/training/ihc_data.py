"""Paired H&E / IHC tiles for training virtual IHC: the folder layout, its checks, the dataset.

A pair folder holds::

    he/NAME.png      the H&E tile (RGB, 8-bit)
    ihc/NAME.png     the IHC tile of the same tissue, pixel-aligned with it
    mask/NAME.png    optional: the marker-positive cell mask (0 / non-zero);
                     made from the IHC by colour deconvolution when absent
    manifest.csv     optional (written by ``stainfuser make-ihc-pairs``)

Names are matched without their suffix (``he/a.png`` pairs with ``ihc/a.jpg``).
``stainfuser make-ihc-pairs`` writes this layout from two registered slides,
:func:`write_synthetic_pairs` from the synthetic-slide generator.

A training sample is a random ``tile``² crop of one pair with a random flip
and 90° rotation (the same for H&E, IHC and mask) and a mild colour jitter of
the H&E only (its stain varies between labs; the IHC is what is learnt).
Everything random is drawn from a generator seeded per sample, so a step's
batch is a pure function of (seed, step).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ParameterError, opt
from .tileio import IMAGE_SUFFIXES, list_images, read_rgb

HE_DIR, IHC_DIR, MASK_DIR = "he", "ihc", "mask"


@dataclass(frozen=True)
class Pair:
    name: str
    he: Path
    ihc: Path
    mask: Path | None
    marker: str
    shape: tuple[int, int]


def _header_shape(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (UnidentifiedImageError, OSError) as exc:
        raise ParameterError(f"{path}: cannot be read as an image ({exc})") from None


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in list_images(folder)}


def _listed(names, shown: int = 5) -> str:
    names = sorted(names)
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def find_pairs(root, marker: str, min_size: int = 64) -> list[Pair]:
    """The pairs of a folder, checked from their headers; one-line errors otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise ParameterError(f"{opt('pairs')} {root}: not a folder")
    for sub in (HE_DIR, IHC_DIR):
        if not (root / sub).is_dir():
            raise ParameterError(
                f"{opt('pairs')} {root}: no {sub}/ folder (expected he/NAME.png and ihc/NAME.png)"
            )
    he, ihc = _by_stem(root / HE_DIR), _by_stem(root / IHC_DIR)
    masks = _by_stem(root / MASK_DIR) if (root / MASK_DIR).is_dir() else {}
    only_he, only_ihc = set(he) - set(ihc), set(ihc) - set(he)
    if only_he or only_ihc:
        parts = []
        if only_he:
            parts.append(f"he/ without ihc/: {_listed(only_he)}")
        if only_ihc:
            parts.append(f"ihc/ without he/: {_listed(only_ihc)}")
        raise ParameterError(f"{opt('pairs')} {root}: unmatched names; " + "; ".join(parts))
    if not he:
        raise ParameterError(
            f"{opt('pairs')} {root}: no images in he/ (suffixes {', '.join(IMAGE_SUFFIXES)})"
        )
    stray = set(masks) - set(he)
    if stray:
        raise ParameterError(f"{opt('pairs')} {root}: mask/ without he/: {_listed(stray)}")
    pairs = []
    for name in sorted(he):
        shape = _header_shape(he[name])
        for other in (ihc[name], masks.get(name)):
            if other is not None and _header_shape(other) != shape:
                h, w = _header_shape(other)
                raise ParameterError(
                    f"{opt('pairs')} {root}: {name}: he is {shape[1]}×{shape[0]} px but "
                    f"{other.parent.name}/{other.name} is {w}×{h} px; pairs must be the same size"
                )
        if min(shape) < min_size:
            raise ParameterError(
                f"{opt('tile')} {min_size}: {he[name]} is only {shape[1]}×{shape[0]} px"
            )
        pairs.append(Pair(name, he[name], ihc[name], masks.get(name), marker, shape))
    return pairs


def read_mask(path: Path) -> np.ndarray:
    import imagecodecs

    img = np.asarray(imagecodecs.imread(str(path)))
    return (img.max(axis=2) if img.ndim == 3 else img) > 0


def pair_arrays(pair: Pair, mask_params=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H&E, IHC, mask) of a pair; the mask from the IHC when the folder has none."""
    he, ihc = read_rgb(pair.he), read_rgb(pair.ihc)
    if pair.mask is not None:
        return he, ihc, read_mask(pair.mask)
    from .coarse_mask import NoDABWarning, coarse_mask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDABWarning)  # a negative tile is a valid sample
        return he, ihc, coarse_mask(ihc, **(mask_params or {}))


def write_mask(path, mask: np.ndarray) -> None:
    """A mask as an 8-bit grey PNG (0 / 255), atomically."""
    import imagecodecs

    from ..atomic import write_bytes_atomic

    write_bytes_atomic(path, imagecodecs.png_encode(np.where(mask, 255, 0).astype(np.uint8)))


def jitter_he(he: np.ndarray, rng: np.random.Generator, strength: float = 0.05) -> np.ndarray:
    """A mild stain jitter: each channel's optical density scaled by 1 ± ``strength``."""
    od = -np.log((he.astype(np.float32) + 1) / 256)
    od *= rng.uniform(1 - strength, 1 + strength, 3).astype(np.float32)
    return np.clip(256 * np.exp(-od) - 1, 0, 255).round().astype(np.uint8)


class PairDataset(torch.utils.data.Dataset):
    """Indexed by ``(pair index, sample seed)`` (see ``StepBatchSampler``).

    Returns ``he`` and ``ihc`` as 3×tile×tile uint8, ``mask`` as 1×tile×tile
    uint8 (0/1) and ``marker`` (the index in ``markers``).
    """

    def __init__(self, pairs: list[Pair], markers, tile: int, augment: bool = True,
                 mask_params=None, cache: int = 256):  # fmt: skip
        self.pairs, self.tile, self.augment = pairs, int(tile), augment
        self.markers = list(markers)
        self.mask_params = mask_params
        self._cache: dict[int, tuple] = {}
        self._cache_size = cache

    def __len__(self) -> int:
        return len(self.pairs)

    def arrays(self, i: int):
        hit = self._cache.get(i)
        if hit is None:
            hit = pair_arrays(self.pairs[i], self.mask_params)
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[i] = hit
        return hit

    def __getitem__(self, key):
        i, seed = key
        he, ihc, mask = self.arrays(i)
        rng = np.random.default_rng(seed)
        t = self.tile
        h, w = mask.shape
        y = int(rng.integers(0, h - t + 1))
        x = int(rng.integers(0, w - t + 1))
        he, ihc, mask = (a[y : y + t, x : x + t] for a in (he, ihc, mask))
        if self.augment:
            k = int(rng.integers(4))
            flip = bool(rng.integers(2))
            he, ihc, mask = (np.rot90(a, k) for a in (he, ihc, mask))
            if flip:
                he, ihc, mask = (a[:, ::-1] for a in (he, ihc, mask))
            he = jitter_he(np.ascontiguousarray(he), rng)
        return {
            "he": torch.from_numpy(np.ascontiguousarray(he).transpose(2, 0, 1).copy()),
            "ihc": torch.from_numpy(np.ascontiguousarray(ihc).transpose(2, 0, 1).copy()),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)[None].astype(np.uint8)),
            "marker": torch.tensor(self.markers.index(self.pairs[i].marker)),
        }


def write_synthetic_pairs(
    out, n: int, *, tile: int = 128, marker: str = "CK8/18", seed: int = 0, mpp: float = 1.0,
    min_tissue: float = 0.5,
) -> list[str]:  # fmt: skip
    """``n`` pairs cut from the synthetic-slide generator, with the true cell mask.

    H&E and H-DAB are rendered from one tissue model, so they are pixel
    aligned and the mask is the ground truth of the marker-positive cells
    (see :mod:`napari_stainfuser.slide.synthetic`). Tiles lie on a grid of a
    slide of this ``seed``, and only tiles with at least ``min_tissue`` tissue
    are kept. Returns the names written.
    """
    from ..slide.synthetic import SyntheticTissue
    from .tileio import write_png

    out = Path(out)
    tissue = SyntheticTissue(seed, mpp)
    names, k = [], 0
    side = 4 * tile
    while len(names) < n:
        # Walk a grid of 4×4-tile windows across the plane (tissue has gaps).
        wy, wx = divmod(k, 64)
        k += 1
        origin = (wy * side, wx * side)
        cover = np.asarray(tissue.tissue_mask((side, side), chunks=side, origin=origin))
        he = ihc = mask = None
        for ty in range(4):
            for tx in range(4):
                sl = np.s_[ty * tile : (ty + 1) * tile, tx * tile : (tx + 1) * tile]
                if cover[sl].mean() < min_tissue or len(names) >= n:
                    continue
                if he is None:
                    he = np.asarray(tissue.render_he((side, side), chunks=side, origin=origin))
                    rgb, m = tissue.render_ihc((side, side), marker, chunks=side, origin=origin)
                    ihc, mask = np.asarray(rgb), np.asarray(m)
                name = f"s{seed}-y{origin[0] + ty * tile}-x{origin[1] + tx * tile}"
                write_png(out / HE_DIR / f"{name}.png", he[sl])
                write_png(out / IHC_DIR / f"{name}.png", ihc[sl])
                write_mask(out / MASK_DIR / f"{name}.png", mask[sl])
                names.append(name)
    return names
