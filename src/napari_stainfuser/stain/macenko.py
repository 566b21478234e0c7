"""Macenko et al., "A method for normalizing histology slides for quantitative
analysis", ISBI 2009.

Stain vectors are the directions at the ``alpha`` and ``100 - alpha``
percentiles of the angle of optical-density vectors projected on the plane of
their two principal components; concentrations are their least-squares
coefficients, scaled so that each stain's 99th percentile matches the target's.

Deliberate differences from torchstain's ``MacenkoNormalizer`` (and
tiatoolbox's, which follows the same reference code):

* Statistics come from tissue pixels only (tissue mask and OD ≥ beta): the
  99th-percentile concentrations are taken over tissue, not over every pixel
  including glass, so they do not depend on how much background a tile has.
* The principal axes get a fixed sign, so the result does not depend on the
  sign the eigen-solver happens to return.
* Background: the part of a pixel that is brighter than ``io`` (negative
  optical density) is not pushed through the stain model but passed through,
  so white glass stays white; torchstain tints it (and, for a tile with no
  pixel above ``beta``, crashes in ``kthvalue``).
* Reconstruction is ``io * exp(-OD) - 1``, the exact inverse of the forward
  ``-ln((I + 1) / io)``, rounded to nearest; torchstain omits the ``- 1`` and
  truncates.
* Stains that cannot be separated (a single colour, collinear vectors) raise
  :class:`StainEstimationError` instead of returning NaN.
"""

import math

import torch

from ..errors import StainEstimationError
from .base import StainNormalizer, State, _check_number, nearest_percentile
from .density import od_to_rgb, rgb_to_od, split_background
from .matrices import MIN_STAIN_ANGLE
from .planar import mix


def principal_plane(od: torch.Tensor) -> torch.Tensor:
    """3×2 orthonormal basis of the plane of the two largest principal axes
    (second largest first, as in Macenko's reference code), sign-fixed so
    that each axis has a non-negative sum."""
    cov = torch.cov(od.T)
    _, vecs = torch.linalg.eigh(cov)
    plane = vecs[:, [1, 2]].clone()
    signs = torch.where(plane.sum(0) < 0, -1.0, 1.0).to(plane.dtype)
    return plane * signs


def angle_extremes(od: torch.Tensor, alpha: float) -> torch.Tensor:
    """The two extreme stain directions (2×3, hematoxylin first) of optical
    densities ``od`` (N×3, float64)."""
    plane = principal_plane(od)
    proj = od @ plane
    phi = torch.atan2(proj[:, 1], proj[:, 0])
    lo = nearest_percentile(phi, alpha)
    hi = nearest_percentile(phi, 100.0 - alpha)
    v_lo = plane @ torch.stack([torch.cos(lo), torch.sin(lo)])
    v_hi = plane @ torch.stack([torch.cos(hi), torch.sin(hi)])
    # Hematoxylin absorbs more red than eosin does.
    return torch.stack([v_lo, v_hi]) if v_lo[0] > v_hi[0] else torch.stack([v_hi, v_lo])


def check_separable(stains: torch.Tensor, name: str) -> None:
    """Raise if two stain vectors are (nearly) collinear or not finite."""
    if not torch.isfinite(stains).all():
        raise StainEstimationError(f"{name}: stain vectors could not be estimated")
    unit = stains / stains.norm(dim=1, keepdim=True).clamp_min(1e-12)
    for i in range(len(unit)):
        for j in range(i + 1, len(unit)):
            cos = float((unit[i] @ unit[j]).abs().clamp(max=1.0))
            if math.acos(cos) < MIN_STAIN_ANGLE:
                raise StainEstimationError(
                    f"{name}: cannot separate two stains (the image looks like a single colour)"
                )


def stain_od(
    pixels: torch.Tensor,
    io: float,
    beta: float,
    min_pixels: int,
    name: str,
    every_channel: bool = True,
):
    """Optical densities (float64) of pixels absorbing at least ``beta`` in every
    channel, or with ``every_channel=False`` in any channel (their absorbing
    part, as :func:`split_background` gives it)."""
    od = rgb_to_od(pixels, io).to(torch.float64)
    if every_channel:
        od = od[(od >= beta).all(dim=1)]
    else:
        od = split_background(od.T)[0].T
        od = od[(od >= beta).any(dim=1)]
    if od.shape[0] < min_pixels:
        where = "every" if every_channel else "any"
        raise StainEstimationError(
            f"{name}: too little tissue to estimate stains ({od.shape[0]} pixels with "
            f"optical density ≥ {beta:g} in {where} channel, need {min_pixels})"
        )
    return od


def max_concentrations(c: torch.Tensor, percentile: float) -> torch.Tensor:
    return torch.stack([nearest_percentile(c[:, i], percentile) for i in range(c.shape[1])])


def concentration_ratio(src_max: torch.Tensor, tgt_max: torch.Tensor) -> torch.Tensor:
    """Per-stain scale target/source; 1 where the source has (almost) none of a stain."""
    ok = src_max > 1e-6
    safe = torch.where(ok, src_max, torch.ones_like(src_max))
    return torch.where(ok, tgt_max.clamp_min(0.0) / safe, torch.ones_like(src_max))


class MacenkoNormalizer(StainNormalizer):
    """Macenko stain normalization (see the module docstring).

    alpha: percentile (and 100 - alpha) of the angle for the stain vectors.
    beta: optical-density threshold below which a pixel is transparent.
    percentile: concentration percentile matched between source and target.
    io: background intensity (240 by default, as in Macenko's code).
    """

    name = "macenko"
    method_params = ("alpha", "beta", "percentile")

    def __init__(self, *, alpha: float = 1.0, beta: float = 0.15, percentile: float = 99.0, **kw):
        super().__init__(**kw)
        self.alpha = _check_number(alpha, "alpha", 0.0, 50.0, hi_open=True)
        self.beta = _check_number(beta, "beta", 0.0, 10.0)
        self.percentile = _check_number(percentile, "percentile", 0.0, 100.0, lo_open=True)

    def _estimate(self, pixels: torch.Tensor, name: str) -> State:
        od = stain_od(pixels, self.io, self.beta, self.min_tissue_pixels, name)
        stains = angle_extremes(od, self.alpha)
        check_separable(stains, name)
        c = od @ torch.linalg.pinv(stains)
        maxc = max_concentrations(c, self.percentile)
        if not (maxc > 0).all():
            raise StainEstimationError(f"{name}: a stain has no positive concentration")
        return {"stain_matrix": stains, "max_concentrations": maxc}

    def _map(self, rgb: torch.Tensor, src: State, tgt: State) -> torch.Tensor:
        stained, excess = split_background(rgb_to_od(rgb, self.io))
        # Unmix with the source vectors, rescale, remix with the target's: one
        # 3×3 linear map of the absorbing part of the optical density.
        ratio = concentration_ratio(src["max_concentrations"], tgt["max_concentrations"])
        w = tgt["stain_matrix"].T @ torch.diag(ratio) @ torch.linalg.pinv(src["stain_matrix"]).T
        return od_to_rgb(mix(w, stained) + excess, self.io)
