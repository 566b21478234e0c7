"""CIELAB in floating point (sRGB primaries, D65 white, 2° observer).

OpenCV's 8-bit LAB quantises L to 0..255 and offsets a, b by 128; here L is
0..100 and a, b are unbounded floats, as in CIE 15 and scikit-image. The CIE
constants are the exact rational ones (ε = 216/24389, κ = 24389/27), not the
rounded 0.008856 / 7.787 many ports use.

All functions take torch tensors or numpy arrays with channels last
(..., 3) and return torch tensors; float64 input stays float64, everything
else computes in float32. uint8 RGB is linearised with a 256-entry table.
"""

import math
from functools import lru_cache

import numpy as np
import torch

from ._threads import run_all
from .planar import mix

# IEC 61966-2-1 (sRGB) primaries to CIE XYZ, D65.
XYZ_FROM_RGB = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB)
D65 = np.array([0.95047, 1.0, 1.08883])
# Rows scaled by the white point: XYZ / (Xn, Yn, Zn) in one step.
_XYZN_FROM_RGB = XYZ_FROM_RGB / D65[:, None]
_RGB_FROM_XYZN = RGB_FROM_XYZ * D65[None, :]

_EPS = 216.0 / 24389.0
_KAPPA = 24389.0 / 27.0


def _float(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t if t.dtype == torch.float64 else t.to(torch.float32)


def srgb_to_linear(v: torch.Tensor) -> torch.Tensor:
    """Undo sRGB companding of values in [0, 1]."""
    return torch.where(v <= 0.04045, v / 12.92, ((v.clamp_min(0.0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v: torch.Tensor) -> torch.Tensor:
    """Apply sRGB companding to linear values (result unclipped)."""
    return torch.where(
        v <= 0.0031308, v * 12.92, 1.055 * v.clamp_min(0.0031308) ** (1.0 / 2.4) - 0.055
    )


@lru_cache(maxsize=1)
def _linear_table() -> np.ndarray:
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _linear_rgb(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == torch.uint8:
        return torch.from_numpy(_linear_table()).to(t.device)[t.long()]
    return srgb_to_linear(t)


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _EPS, t.clamp_min(_EPS) ** (1.0 / 3.0), (_KAPPA * t + 16.0) / 116.0)


def _f_inv(f: torch.Tensor) -> torch.Tensor:
    f3 = f * f * f
    return torch.where(f3 > _EPS, f3, (116.0 * f - 16.0) / _KAPPA)


def lab_planes(r, g, b) -> list[torch.Tensor]:
    """L, a, b planes from R, G, B planes (uint8, or float in [0, 1])."""
    fx, fy, fz = (_f(t) for t in mix(_XYZN_FROM_RGB, [_linear_rgb(c) for c in (r, g, b)]))
    return [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]


def rgb_planes(L, a, b) -> list[torch.Tensor]:
    """Unclipped sRGB planes (float, nominally [0, 1]) from L, a, b planes."""
    fy = (L + 16.0) / 116.0
    xyzn = [_f_inv(fy + a / 500.0), _f_inv(fy), _f_inv(fy - b / 200.0)]
    return [linear_to_srgb(c) for c in mix(_RGB_FROM_XYZN, xyzn)]


def rgb_to_lab(rgb) -> torch.Tensor:
    """CIELAB (..., 3) from RGB (..., 3): uint8, or float in [0, 1]."""
    t = torch.as_tensor(rgb)
    if t.dtype != torch.uint8:
        t = _float(t)
    return torch.stack(lab_planes(*t.unbind(-1)), dim=-1)


def lab_to_rgb(lab, clip: bool = True) -> torch.Tensor:
    """RGB float (..., 3) in [0, 1] (clipped unless ``clip=False``) from CIELAB."""
    rgb = torch.stack(rgb_planes(*_float(lab).unbind(-1)), dim=-1)
    return rgb.clamp(0.0, 1.0) if clip else rgb


def delta_e_ciede2000(lab1, lab2) -> torch.Tensor:
    """CIEDE2000 colour difference (kL = kC = kH = 1), Sharma et al. 2005."""
    lab1, lab2 = torch.broadcast_tensors(_float(lab1), _float(lab2))
    lab1 = lab1.to(torch.promote_types(lab1.dtype, lab2.dtype))
    lab2 = lab2.to(lab1.dtype)
    L1, a1, b1 = lab1.unbind(-1)
    L2, a2, b2 = lab2.unbind(-1)
    c_bar = (torch.hypot(a1, b1) + torch.hypot(a2, b2)) / 2.0
    c7 = c_bar**7
    g = 0.5 * (1.0 - torch.sqrt(c7 / (c7 + 25.0**7)))
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2
    c1p, c2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    two_pi = 2.0 * math.pi
    h1p = torch.remainder(torch.atan2(b1, a1p), two_pi)
    h2p = torch.remainder(torch.atan2(b2, a2p), two_pi)
    chroma0 = (c1p * c2p) == 0

    dl = L2 - L1
    dc = c2p - c1p
    dh = h2p - h1p
    dh = torch.where(dh > math.pi, dh - two_pi, torch.where(dh < -math.pi, dh + two_pi, dh))
    dh = torch.where(chroma0, torch.zeros_like(dh), dh)
    d_hue = 2.0 * torch.sqrt(c1p * c2p) * torch.sin(dh / 2.0)

    l_bar = (L1 + L2) / 2.0
    cp_bar = (c1p + c2p) / 2.0
    h_sum = h1p + h2p
    h_bar = torch.where(
        (h1p - h2p).abs() <= math.pi,
        h_sum / 2.0,
        torch.where(h_sum < two_pi, (h_sum + two_pi) / 2.0, (h_sum - two_pi) / 2.0),
    )
    h_bar = torch.where(chroma0, h_sum, h_bar)

    deg = math.pi / 180.0
    t = (
        1.0
        - 0.17 * torch.cos(h_bar - 30.0 * deg)
        + 0.24 * torch.cos(2.0 * h_bar)
        + 0.32 * torch.cos(3.0 * h_bar + 6.0 * deg)
        - 0.20 * torch.cos(4.0 * h_bar - 63.0 * deg)
    )
    d_theta = 30.0 * deg * torch.exp(-(((h_bar / deg - 275.0) / 25.0) ** 2))
    cp7 = cp_bar**7
    r_c = 2.0 * torch.sqrt(cp7 / (cp7 + 25.0**7))
    s_l = 1.0 + 0.015 * (l_bar - 50.0) ** 2 / torch.sqrt(20.0 + (l_bar - 50.0) ** 2)
    s_c = 1.0 + 0.045 * cp_bar
    s_h = 1.0 + 0.015 * cp_bar * t
    r_t = -torch.sin(2.0 * d_theta) * r_c
    tl, tc, th = dl / s_l, dc / s_c, d_hue / s_h
    return torch.sqrt((tl**2 + tc**2 + th**2 + r_t * tc * th).clamp_min(0.0))


def delta_e2000_rgb(rgb1, rgb2, chunk: int = 1 << 18) -> torch.Tensor:
    """Per-pixel CIEDE2000 (float64) between two same-shape RGB images
    (uint8, or float in [0, 1]), computed in chunks to bound memory."""
    a = _as64(rgb1).reshape(-1, 3)
    b = _as64(rgb2).reshape(-1, 3)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(rgb1.shape)} vs {tuple(rgb2.shape)}")
    out = torch.empty(a.shape[0], dtype=torch.float64)

    def job(i: int) -> None:
        s = slice(i, i + chunk)
        out[s] = delta_e_ciede2000(rgb_to_lab(a[s]), rgb_to_lab(b[s]))

    run_all(job, range(0, a.shape[0], chunk))
    return out.reshape(tuple(rgb1.shape[:-1]))


def _as64(rgb) -> torch.Tensor:
    t = rgb if isinstance(rgb, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(rgb))
    if t.dtype == torch.uint8:
        return t.to(torch.float64) / 255.0
    return t.to(torch.float64)
