"""The one list of stain methods and diffusion samplers the package knows.

Kept free of heavy imports: the CLI builds its ``--help`` and checks its
arguments from these names before torch or dask load.
"""

# Per-pixel methods: fitted statistics, then an exact 256³ lookup table.
CLASSICAL = ("macenko", "reinhard", "ruifrok", "vahadane")
# Conditional latent diffusion (StainFuser).
DIFFUSION = ("stainfuser",)
METHODS = (*CLASSICAL, *DIFFUSION)

# Diffusion samplers (diffusers schedulers) by the names the CLI and the API take.
SAMPLERS = ("pndm", "ddim", "dpm++", "euler")
SAMPLER_ALIASES = {
    "plms": "pndm",
    "dpmsolver++": "dpm++",
    "dpm-solver++": "dpm++",
    "dpmpp": "dpm++",
}

# StainFuser's preprocessing: ours (deterministic, tile-independent) or the
# official WSI script's (see napari_stainfuser.diffusion.official).
PREPROCESS = ("ours", "official")
