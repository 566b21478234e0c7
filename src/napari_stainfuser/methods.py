"""The one list of stain methods and diffusion samplers the package knows.

Kept free of heavy imports: the CLI builds its ``--help`` and checks its
arguments from these names before torch or dask load.
"""

# Per-pixel methods: fitted statistics, then an exact 256³ lookup table.
CLASSICAL = ("macenko", "reinhard", "ruifrok", "vahadane")
# Conditional latent diffusion (StainFuser).
DIFFUSION = ("stainfuser",)
METHODS = (*CLASSICAL, *DIFFUSION)
# H&E to a virtual IHC stain plus the marker-positive cell mask (not a
# normalization: it takes a marker and a trained checkpoint, not a target).
VIRTUAL_IHC = "virtual-ihc"

# Diffusion samplers (diffusers schedulers) by the names the CLI and the API take.
SAMPLERS = ("pndm", "ddim", "dpm++", "euler")
# The samplers the virtual-IHC model (an x0-predicting pixel-space model) runs with.
IHC_SAMPLERS = ("ddim", "dpm++")
SAMPLER_ALIASES = {
    "plms": "pndm",
    "dpmsolver++": "dpm++",
    "dpm-solver++": "dpm++",
    "dpmpp": "dpm++",
}

# StainFuser's preprocessing: ours (deterministic, tile-independent) or the
# official WSI script's (see napari_stainfuser.diffusion.official).
PREPROCESS = ("ours", "official")
