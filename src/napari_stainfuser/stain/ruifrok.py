"""Ruifrok & Johnston colour deconvolution with fixed stain vectors.

The stain matrix is fixed (Ruifrok's published H&E by default, or H-DAB,
H-E-DAB, or custom rows); only each stain's amount is normalized: the
source's 99th-percentile concentration of every stain, over the pixels that
absorb at least ``beta`` in any channel, is scaled to the target's. Colour
the fixed vectors do not explain (the least-squares residual) passes through
unchanged, so fitting source and target on the same image gives the
identity. This corrects staining intensity, not hue.

Deliberate difference from tiatoolbox's ``RuifrokNormalizer``: tiatoolbox
rebuilds every pixel from the stain vectors alone, with a background of 255,
so the residual colour is lost and even a self-normalized image changes. We
keep the residual and use the normalizer's ``io`` (240 by default, as for
Macenko); glass brighter than ``io`` keeps its extra brightness (see
:func:`~napari_stainfuser.stain.density.split_background`).
"""

import numpy as np
import torch

from ..errors import ParameterError, StainEstimationError
from .base import StainNormalizer, State, _check_number
from .density import od_to_rgb, rgb_to_od, split_background
from .macenko import concentration_ratio, max_concentrations, stain_od
from .matrices import stain_matrix
from .planar import mix

# Grey levels of spread below which the pixels are one colour.
_MIN_SPREAD = 2.0


class RuifrokNormalizer(StainNormalizer):
    """Fixed-matrix deconvolution plus target concentration statistics.

    stains: 'he', 'hdab', 'hedab', or 1-3 rows of RGB optical density.
    beta: optical-density threshold for tissue pixels.
    percentile: concentration percentile matched between source and target.
    """

    name = "ruifrok"
    method_params = ("stains", "beta", "percentile")

    def __init__(self, *, stains="he", beta: float = 0.15, percentile: float = 99.0, **kw):
        super().__init__(**kw)
        self._matrix = _check_stains(stains)
        self.stains = stains if isinstance(stains, str) else self._matrix.tolist()
        self.beta = _check_number(beta, "beta", 0.0, 10.0)
        self.percentile = _check_number(percentile, "percentile", 0.0, 100.0, lo_open=True)

    def _estimate(self, pixels: torch.Tensor, name: str) -> State:
        # Every pixel that absorbs in any channel: requiring all three (as
        # Macenko's vector estimate does) drops pale eosin, and how much of it
        # depends on the staining strength, so the matched percentile would
        # not scale with the stain it measures.
        # A single colour (a black frame, a solid fill) is not tissue: refuse it,
        # as the methods that estimate stain vectors do.
        if float(pixels.double().std(dim=0, correction=0).max()) < _MIN_SPREAD:
            raise StainEstimationError(f"{name}: the image looks like a single colour, not tissue")
        od = stain_od(pixels, self.io, self.beta, self.min_tissue_pixels, name, every_channel=False)
        c = od @ torch.from_numpy(np.linalg.pinv(self._matrix))
        maxc = max_concentrations(c, self.percentile)
        if not (maxc > 0).all():
            raise StainEstimationError(
                f"{name}: a stain has no positive concentration (is there tissue?)"
            )
        return {"max_concentrations": maxc}

    def _map(self, rgb: torch.Tensor, src: State, tgt: State) -> torch.Tensor:
        od = rgb_to_od(rgb, self.io)
        stained, _ = split_background(od)
        m = torch.from_numpy(self._matrix).to(torch.float32)
        gain = concentration_ratio(src["max_concentrations"], tgt["max_concentrations"]) - 1.0
        # Only the change of each stain's amount is added to the input's OD.
        w = m.T @ torch.diag(gain.cpu()) @ torch.linalg.pinv(m).T
        return od_to_rgb(od + mix(w, stained), self.io)


def _check_stains(stains):
    try:
        return stain_matrix(stains)
    except ParameterError as e:
        raise ParameterError(f"stains: {e}") from None
