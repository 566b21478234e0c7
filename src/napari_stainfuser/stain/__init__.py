"""Classical stain physics and normalization.

Optical density, stain matrices, colour deconvolution, float CIELAB, tissue
detection, and the Macenko, Reinhard, Vahadane and Ruifrok normalizers behind
one interface::

    norm = get_normalizer("macenko").fit(target_rgb)
    norm.fit_source(slide)          # slide-level statistics, once
    out = norm.transform(tile)      # H×W×3 uint8, or B×3×H×W tensor
    norm.save("target.json")        # a stain preset; load_normalizer() reads it
"""

from .base import StainNormalizer
from .deconvolution import (
    complete_matrix,
    deconvolve,
    reconstruct,
    rgb_to_stains,
    stains_to_rgb,
    unmixing_matrix,
)
from .density import DEFAULT_IO, od_lut, od_to_rgb, rgb_to_od
from .lab import delta_e2000_rgb, delta_e_ciede2000, lab_to_rgb, rgb_to_lab
from .macenko import MacenkoNormalizer
from .matrices import RUIFROK_HDAB, RUIFROK_HE, RUIFROK_HEDAB, STAIN_MATRICES, stain_matrix
from .registry import (
    NORMALIZERS,
    fit_target,
    get_normalizer,
    load,
    load_normalizer,
    read_target_image,
)
from .reinhard import ReinhardNormalizer
from .ruifrok import RuifrokNormalizer
from .sampling import tissue_pixels
from .tissue import TissueMask, mask_at_shape, otsu_threshold, slide_overview, tissue_mask
from .vahadane import VahadaneNormalizer

__all__ = [
    "DEFAULT_IO",
    "NORMALIZERS",
    "RUIFROK_HDAB",
    "RUIFROK_HE",
    "RUIFROK_HEDAB",
    "STAIN_MATRICES",
    "MacenkoNormalizer",
    "ReinhardNormalizer",
    "RuifrokNormalizer",
    "StainNormalizer",
    "TissueMask",
    "VahadaneNormalizer",
    "complete_matrix",
    "deconvolve",
    "delta_e2000_rgb",
    "delta_e_ciede2000",
    "fit_target",
    "get_normalizer",
    "lab_to_rgb",
    "load",
    "load_normalizer",
    "mask_at_shape",
    "od_lut",
    "od_to_rgb",
    "otsu_threshold",
    "read_target_image",
    "reconstruct",
    "rgb_to_lab",
    "rgb_to_od",
    "rgb_to_stains",
    "slide_overview",
    "stain_matrix",
    "stains_to_rgb",
    "tissue_mask",
    "tissue_pixels",
    "unmixing_matrix",
]
