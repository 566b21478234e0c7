"""Classical stain physics and normalization.

Optical density, stain matrices, colour deconvolution, float CIELAB, tissue
detection, and the Macenko, Reinhard, Vahadane and Ruifrok normalizers behind
one interface::

    norm = get_normalizer("macenko").fit(target_rgb)
    norm.fit_source(slide)          # slide-level statistics, once
    out = norm.transform(tile)      # H×W×3 uint8, or B×3×H×W tensor
    norm.save("target.json")        # a stain preset; load_normalizer() reads it

Names load on first use: the numpy-only parts (stain matrices, presets,
tissue detection) can be imported without torch.
"""

from importlib import import_module

_LAZY = {
    **dict.fromkeys(
        ("complete_matrix", "deconvolve", "reconstruct", "rgb_to_stains", "stains_to_rgb",
         "unmixing_matrix"),
        ".deconvolution",
    ),
    **dict.fromkeys(("DEFAULT_IO", "od_lut", "od_to_rgb", "rgb_to_od"), ".density"),
    **dict.fromkeys(("delta_e2000_rgb", "delta_e_ciede2000", "lab_to_rgb", "rgb_to_lab"), ".lab"),
    **dict.fromkeys(
        ("RUIFROK_HDAB", "RUIFROK_HE", "RUIFROK_HEDAB", "STAIN_MATRICES", "stain_matrix"),
        ".matrices",
    ),
    # Through the registry, so that every method class is defined (and registered).
    **dict.fromkeys(
        ("NORMALIZERS", "StainNormalizer", "MacenkoNormalizer", "ReinhardNormalizer",
         "RuifrokNormalizer", "VahadaneNormalizer", "get_normalizer", "load", "load_normalizer",
         "valid_params"),
        ".registry",
    ),
    **dict.fromkeys(("MAX_PRESET_BYTES", "read_preset"), ".presets"),
    "tissue_pixels": ".sampling",
    **dict.fromkeys(
        ("TissueMask", "mask_at_shape", "otsu_threshold", "slide_overview", "tissue_mask"),
        ".tissue",
    ),
}  # fmt: skip

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
