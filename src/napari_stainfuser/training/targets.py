"""Choosing target tiles that cover the colour variety of a collection.

Each candidate tile is described by a small feature vector, the features are
clustered with k-means, and the tile nearest each cluster centre is kept
(SPI-2M's targets were chosen by clustering for the same reason: a few
hundred targets that span the stain appearances of thousands of tiles).

Feature sets:

- ``"od"`` (default): mean and standard deviation of each RGB channel's
  optical density over the tile's tissue pixels. Cheap, defined for any
  tile with tissue, and linear in stain amount (Beer–Lambert).
- ``"stain"``: the tile's Macenko stain vectors (hematoxylin, eosin; 6
  values) and the 99th-percentile concentration of each stain (2 values):
  the parameters the physics generator actually transfers.

Tiles with too little tissue to describe (see ``min_tissue_pixels``) are left
out of the candidates.
"""

import numpy as np
import torch

from ..errors import ParameterError, StainEstimationError
from .kmeans import pick_representatives

FEATURES = ("od", "stain")


def _od_features(tile: np.ndarray, min_tissue_pixels: int, seed: int) -> np.ndarray | None:
    from ..stain import rgb_to_od, tissue_pixels

    px = tissue_pixels(tile, max_pixels=1 << 16, seed=seed)
    if len(px) < min_tissue_pixels:
        return None
    od = rgb_to_od(torch.from_numpy(px)).double()
    return torch.cat([od.mean(0), od.std(0, unbiased=False)]).numpy()


def _stain_features(tile: np.ndarray, min_tissue_pixels: int, seed: int) -> np.ndarray | None:
    from ..stain import get_normalizer

    norm = get_normalizer("macenko", min_tissue_pixels=min_tissue_pixels, seed=seed, lut=False)
    try:
        norm.fit(tile)
    except StainEstimationError:
        return None
    s = norm.target_state
    return torch.cat([s["stain_matrix"].flatten(), s["max_concentrations"]]).double().numpy()


def colour_features(
    tiles, kind: str = "od", min_tissue_pixels: int = 500, seed: int = 0
) -> tuple[np.ndarray, list[int], int]:
    """Features of the tiles that have enough tissue.

    ``tiles`` is any iterable of H×W×3 uint8 images (a generator keeps only one
    in memory). Returns (n×d features, the indices they belong to, number of tiles seen).
    """
    if kind not in FEATURES:
        raise ParameterError(f"target features {kind!r} are unknown; valid: {', '.join(FEATURES)}")
    fn = _od_features if kind == "od" else _stain_features
    rows, kept, seen = [], [], 0
    for i, tile in enumerate(tiles):
        seen += 1
        f = fn(np.asarray(tile), min_tissue_pixels, seed)
        if f is not None:
            rows.append(f)
            kept.append(i)
    return (np.stack(rows) if rows else np.zeros((0, 1))), kept, seen


def pick_targets(tiles, k: int, kind: str = "od", seed: int = 0, min_tissue_pixels: int = 500):
    """Indices (into ``tiles``) of ``k`` tiles spanning the colour variety
    (``k=0``: every tile with enough tissue).

    Fewer usable candidates than ``k`` is an error that says how many there are.
    """
    features, kept, seen = colour_features(tiles, kind, min_tissue_pixels, seed)
    k = k or len(kept)
    if not kept or len(kept) < k:
        raise ParameterError(
            f"asked for {k} target tiles but only {len(kept)} of {seen} candidate tiles "
            "have enough tissue; lower --n-targets or add target tiles"
        )
    return [kept[i] for i in pick_representatives(features, k, seed=seed)]
