"""Evaluating a virtual-IHC model on paired tiles (``stainfuser evaluate``).

Every pair's H&E goes through the model; the virtual IHC is compared with the
real one and the predicted mask with the pair's mask (the folder's
``mask/`` when it has one, such as the synthetic pairs' true masks, else the
coarse mask of the real IHC) by :func:`napari_stainfuser.metrics.ihc.tile_metrics`.
The trivial baselines (all-negative and all-positive masks) are scored
against the same references, so the table says whether the model beats them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..metrics.ihc import baseline_metrics, evaluate_rows, nanmean, tile_metrics
from .ihc_data import find_pairs, pair_arrays


@dataclass
class Evaluation:
    rows: list[dict]  # one per pair, then the ``mean`` row
    baselines: dict[str, dict]  # label -> mean metric values of a trivial mask
    predictions: dict[str, dict]  # name -> {"ihc", "mask"} arrays (kept when asked)


def predict(model, he: np.ndarray, noise_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(virtual IHC H×W×3 uint8, mask probability H×W) of one H&E tile of any size.

    The tile is padded by reflection to the model's multiple and cropped back.
    """
    from ..diffusion.ihc_networks import MULTIPLE_OF

    h, w = he.shape[:2]
    ph, pw = -h % MULTIPLE_OF, -w % MULTIPLE_OF
    padded = np.pad(he, ((0, ph), (0, pw), (0, 0)), mode="reflect")
    tiles = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None]
    gen = torch.Generator().manual_seed(model.seed if noise_seed is None else noise_seed)
    noise = torch.randn((1, model.spec.latent_channels, *padded.shape[:2]), generator=gen)
    out = model.stain(tiles, noise)
    ihc = out.tiles[0].numpy().transpose(1, 2, 0)[:h, :w]
    return np.ascontiguousarray(ihc), out.extras["mask"][0, 0].numpy()[:h, :w]


def evaluate_virtual_ihc(pairs_dir, model, *, keep: bool = False, progress=None) -> Evaluation:
    """Score ``model`` (a :class:`~napari_stainfuser.diffusion.virtual_ihc.VirtualIHC`)
    on every pair of ``pairs_dir``."""
    from .coarse_mask import NoDABWarning, coarse_mask

    pairs = find_pairs(pairs_dir, model.marker, min_size=1)
    rows, base, kept = [], {}, {}
    for i, pair in enumerate(pairs):
        he, real, reference = pair_arrays(pair)
        virtual, prob = predict(model, he, noise_seed=model.seed + i)
        predicted = prob >= 0.5
        row = {"name": pair.name, **tile_metrics(real, virtual, predicted_mask=predicted,
                                                   true_mask=reference)}  # fmt: skip
        rows.append(row)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoDABWarning)
            real_dab = coarse_mask(real)
        for prefix, ref in (("mask", reference), ("dab", real_dab)):
            for label, values in baseline_metrics(ref, prefix=prefix).items():
                base.setdefault(label, []).append(values)
        if keep:
            kept[pair.name] = {"ihc": virtual, "mask": predicted, "he": he, "real": real,
                               "reference": reference}  # fmt: skip
        if progress is not None:
            progress(i + 1, len(pairs))
    baselines = {}
    for label, values in base.items():
        keys = {k for v in values for k in v}
        baselines[label] = {k: nanmean([v[k] for v in values if k in v]) for k in sorted(keys)}
    return Evaluation(evaluate_rows(rows), baselines, kept)
