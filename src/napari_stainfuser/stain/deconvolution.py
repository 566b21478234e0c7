"""Colour deconvolution and reconstruction (Ruifrok & Johnston 2001).

Stain matrices have one row per stain and columns R, G, B of optical
density (unit rows), so optical density is ``OD = C @ M`` for per-pixel
concentrations ``C`` (..., k). With fewer stains than channels the system is
over-determined and ``C`` is its least-squares solution, ``OD @ pinv(M)``;
:func:`complete_matrix` instead adds orthogonal residual rows so that a
3×3 inverse exists, as Ruifrok's and scikit-image's ``rgb2hed`` do.
"""

import numpy as np
import torch

from .density import DEFAULT_IO, od_to_rgb, rgb_to_od
from .matrices import stain_matrix


def complete_matrix(stains) -> np.ndarray:
    """A 3×3 stain matrix: the given rows plus unit rows orthogonal to them."""
    m = stain_matrix(stains)
    if m.shape[0] == 3:
        return m
    if m.shape[0] == 2:
        third = np.cross(m[0], m[1])
        return np.vstack([m, third / np.linalg.norm(third)])
    # One stain: any orthonormal pair spanning the complement will do; take the
    # right singular vectors of the row for a deterministic choice.
    _, _, vt = np.linalg.svd(m)
    return np.vstack([m, vt[1:]])


def unmixing_matrix(stains) -> np.ndarray:
    """3×k matrix ``U`` with ``C = OD @ U`` (least squares for k < 3)."""
    m = stain_matrix(stains)
    return np.linalg.pinv(m)


def deconvolve(od, stains) -> torch.Tensor:
    """Per-pixel stain concentrations (..., k) from optical density (..., 3)."""
    od = torch.as_tensor(od)
    u = torch.as_tensor(unmixing_matrix(stains), dtype=od.dtype, device=od.device)
    return od @ u


def reconstruct(concentrations, stains) -> torch.Tensor:
    """Optical density (..., 3) from stain concentrations (..., k)."""
    c = torch.as_tensor(concentrations)
    m = torch.as_tensor(stain_matrix(stains), dtype=c.dtype, device=c.device)
    return c @ m


def rgb_to_stains(rgb, stains="he", io: float = DEFAULT_IO) -> torch.Tensor:
    """Concentrations (H×W×k float32) from an H×W×3 RGB image."""
    return deconvolve(rgb_to_od(rgb, io), stains)


def stains_to_rgb(concentrations, stains="he", io: float = DEFAULT_IO) -> torch.Tensor:
    """RGB on the 0..255 scale (float32) from concentrations (..., k)."""
    c = torch.as_tensor(concentrations, dtype=torch.float32)
    return od_to_rgb(reconstruct(c, stains), io)
