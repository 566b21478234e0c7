"""Procedural tissue geometry: glass, stroma, glands with lumens, and nuclei.

The tissue is an infinite plane fixed by a seed. Features come from
counter-based hashes of grid cells (see `_procedural`), and a window evaluates
every cell whose features can reach it, so values never depend on how the plane
is chunked. Nuclei overlapping each other are composited with a maximum, which
does not depend on their order either.

Sizes are physical (µm) and converted with the slide's µm/px.
"""

import numpy as np

from ._nuclei import F32, Nuclei, harmonics
from ._procedural import (
    Octaves,
    hash_coords,
    stream_key,
    to_unit,
    uniforms,
    value_noise,
    value_noise_at,
)

# Tissue islands: an fBm thresholded at TISSUE_LEVEL. Where both coordinates are
# below ORIGIN_TISSUE_UM (including negative ones) the fBm is lifted above the
# threshold, so previews and tests that start at the origin always show tissue.
TISSUE_CELLS_UM = (1600.0, 800.0, 400.0, 200.0, 50.0)
TISSUE_WEIGHTS = (1.0, 0.5, 0.25, 0.12, 0.05)
TISSUE_LEVEL = 0.5
TISSUE_SLOPE = 500.0  # per fBm unit: tissue edges soft over a few pixels
ORIGIN_TISSUE_UM = 1500.0
ORIGIN_RAMP_UM = 400.0

# Glands: at most one per grid cell, centred in the middle 25 % of the cell, so
# glands in neighbouring cells cannot touch.
GLAND_CELL_UM = 260.0
GLAND_JITTER = 0.25
GLAND_RADIUS_UM = (40.0, 70.0)
GLAND_ASPECT = (0.55, 1.0)
GLAND_HARMONIC = 0.05  # amplitude of each outline harmonic (orders 2, 3, 4)
GLAND_EPITHELIUM_UM = (16.0, 24.0)
GLAND_REGION_UM = 1200.0
EPI_NUCLEUS_SPACING_UM = 8.0

# Nuclei: (long semi-axis range in µm, short/long ratio range).
FIBRO_CELL_UM = 22.0
FIBRO_AXES_UM = ((4.5, 8.0), (0.18, 0.3))
LYMPH_CELL_UM = 9.0
LYMPH_AXES_UM = ((2.9, 3.8), (0.85, 1.0))
EPI_AXES_UM = ((4.0, 6.0), (0.5, 0.7))
INFLAMMATION_UM = 500.0

# Collagen fibres: a carrier of period FIBRE_PERIOD_UM bent by a warp field.
FIBRE_PERIOD_UM = 2.5
FIBRE_WARP_UM = 45.0
FIBRE_WARP_RAD = 24.0
FIBRE_BLEND_UM = 260.0
FIBRE_BUNDLE = 10  # fibre periods per bundle period (two bundles)
# Mean of the bundle profile min(1, 3 |cos θ|) over θ, which it fades to when
# bundles are finer than the pixels: 1 - 2a/π + (6/π)(1 - cos a), a = asin(1/3).
_BUNDLE_MEAN = 1 - 2 * np.arcsin(1 / 3) / np.pi + 6 / np.pi * (1 - np.cos(np.arcsin(1 / 3)))

# Granular texture (chromatin, cytoplasm) and stroma density, in µm.
TEXTURE_CELLS_UM = (2.0, 1.0)
DENSITY_CELL_UM = 120.0

# Coarser than this (µm/px) nuclei are smaller than about a pixel and are
# rendered as their expected coverage instead of one by one.
DETAIL_MPP = 2.0

# Cell membrane of a membrane-stained lymphocyte, in nuclear radii.
MEMBRANE_RING = 1.4

# Random streams; changing a number changes every slide, so they are fixed.
_S_TISSUE, _S_GLAND, _S_GREGION, _S_FIBRO, _S_LYMPH, _S_INFL = range(1, 7)
_S_FIBRE, _S_DENS, _S_TEX, _S_EPI, _S_ANGLES, _S_EPIPHASE = range(7, 13)


def _lerp(u, lo, hi):
    return lo + (hi - lo) * u


def _outline(harm, c, s):
    """Gland outline radius factor 1 + Σ harmonics of orders 2-4 at angle (c, s)."""
    c2, s2, c3, s3 = harmonics(c, s)
    c4, s4 = c2 * c2 - s2 * s2, 2 * c2 * s2
    r = 1 + harm[0] * c2
    r += harm[1] * s2
    r += harm[2] * c3
    r += harm[3] * s3
    r += harm[4] * c4
    r += harm[5] * s4
    return r


class TissueModel:
    """The tissue plane for one seed at one µm/px."""

    def __init__(self, seed: int, mpp: float):
        self.seed = int(seed)
        self.mpp = float(mpp)
        self.key = {s: stream_key(self.seed, s) for s in range(1, 13)}
        px = self.px
        self.tissue_noise = Octaves(
            self.key[_S_TISSUE], [px(c) for c in TISSUE_CELLS_UM], TISSUE_WEIGHTS
        )
        self.texture = Octaves(self.key[_S_TEX], [px(c) for c in TEXTURE_CELLS_UM], (0.6, 0.4))
        self.density = Octaves(self.key[_S_DENS], [px(DENSITY_CELL_UM)], (1.0,))
        self.coarse = self.mpp > DETAIL_MPP
        warp_key, blend_key = hash_coords(self.key[_S_FIBRE], 0), hash_coords(self.key[_S_FIBRE], 1)
        self.fibre_warps = [
            Octaves(hash_coords(warp_key, i), [px(FIBRE_WARP_UM)], (1.0,)) for i in range(2)
        ]
        self.fibre_blend = Octaves(blend_key, [px(FIBRE_BLEND_UM)], (1.0,))
        self.gland_cell = px(GLAND_CELL_UM)
        self.gland_max_extent = px(GLAND_RADIUS_UM[1]) * (1 + 6 * GLAND_HARMONIC) + 2
        # Two fibre families with seed-dependent directions (radians).
        u = to_unit(hash_coords(self.key[_S_ANGLES], np.arange(2)))
        self.fibre_angles = (np.pi * u[0], np.pi * u[0] + np.pi / 2 + 0.8 * (u[1] - 0.5))
        self.fibre_k = 2 * np.pi / px(FIBRE_PERIOD_UM)
        # Patterns finer than a few pixels fade to their mean (no moiré when the
        # tissue is rendered at a coarse µm/px, e.g. for pyramid levels).
        self.fibre_detail = float(np.clip(px(FIBRE_PERIOD_UM) / 2 - 1, 0, 1))
        self.bundle_detail = float(np.clip(px(FIBRE_PERIOD_UM) * FIBRE_BUNDLE / 8 - 1, 0, 1))

    def px(self, um: float) -> float:
        return um / self.mpp

    # --- large-scale fields -------------------------------------------------

    def _origin_lift(self, ys, xs):
        r0, ramp = self.px(ORIGIN_TISSUE_UM), self.px(ORIGIN_RAMP_UM)
        by = (0.5 * np.clip((r0 + ramp - ys) / ramp, 0, 1)).astype(F32)
        bx = np.clip((r0 + ramp - xs) / ramp, 0, 1).astype(F32)
        return by, bx

    def tissue_constant(self, ys, xs):
        """1.0 or 0.0 if the coverage is that everywhere on ys × xs, else None.

        Away from the edge the clip in `tissue` gives exactly 0 or 1 whatever the
        per-pixel noise; a bound from the lattice values decides that without
        evaluating the noise, and agrees with what evaluating it would give.
        """
        by, bx = self._origin_lift(ys, xs)
        lo, hi = self.tissue_noise.bounds(ys, xs)
        lo += float(by.min()) * float(bx.min())
        hi += float(by.max()) * float(bx.max())
        eps = 1e-3
        if (lo - TISSUE_LEVEL) * TISSUE_SLOPE >= 0.5 + eps:
            return 1.0
        if (hi - TISSUE_LEVEL) * TISSUE_SLOPE <= -0.5 - eps:
            return 0.0
        return None

    def tissue(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Tissue coverage in [0, 1]: 1 in tissue, 0 on glass, with a soft edge.

        Octaves are added coarse to fine; as soon as the finer ones can no
        longer move any pixel across the clip, the exact 0 or 1 is returned.
        """
        by, bx = self._origin_lift(ys, xs)
        lift_lo, lift_hi = float(by.min()) * float(bx.min()), float(by.max()) * float(bx.max())
        shape = (len(ys), len(xs))

        def decide(partial, rest_lo, rest_hi):
            lo = float(partial.min()) + rest_lo + lift_lo
            hi = float(partial.max()) + rest_hi + lift_hi
            if (lo - TISSUE_LEVEL) * TISSUE_SLOPE >= 0.5 + 1e-3:
                return np.ones(shape, F32)
            if (hi - TISSUE_LEVEL) * TISSUE_SLOPE <= -0.5 - 1e-3:
                return np.zeros(shape, F32)
            return None

        f, settled = self.tissue_noise.evaluate(ys, xs, decide)
        if settled:
            return f
        f += by[:, None] * bx[None, :]
        f -= F32(TISSUE_LEVEL)
        f *= F32(TISSUE_SLOPE)
        f += F32(0.5)
        return np.clip(f, 0, 1, out=f)

    def fibres(self, ys, xs):
        """Collagen: (fibre density in [0, 1], cleft map in [0, 1]).

        Two families of wavy fibres, blended over a few hundred µm; where the
        families cross over, the texture fades into homogeneous collagen. Fibres
        gather into bundles (a subharmonic of the fibre phase) separated by thin
        pale gaps; some gaps of the first family open into clefts, the white
        shrinkage spaces of fixed stroma.
        """
        warps = [w(ys, xs) for w in self.fibre_warps]
        # Intermittent clefts: only where family 2's warp is high.
        gate = warps[1] - F32(0.55)
        gate *= F32(5.0)
        np.clip(gate, 0, 1, out=gate)
        fam = []
        for i, ang in enumerate(self.fibre_angles):
            k = self.fibre_k
            # Phases of the two axes in float64, reduced modulo the bundle period,
            # so the float32 sum per pixel is a fixed formula of global coordinates.
            period = 2 * np.pi * FIBRE_BUNDLE
            py = np.mod(k * np.sin(ang) * ys, period).astype(F32)
            px_ = np.mod(k * np.cos(ang) * xs, period).astype(F32)
            phase = warps[i] * F32(FIBRE_WARP_RAD)
            phase += py[:, None]
            phase += px_[None, :]
            f = np.sin(phase)
            f *= f
            f *= F32(0.4 * self.fibre_detail)
            f += F32(0.8 - 0.2 * self.fibre_detail)  # mean 0.8 whatever the detail
            # Bundles: a subharmonic, shifted by the other family's warp so that
            # bundle widths vary.
            phase *= F32(1 / FIBRE_BUNDLE)
            phase += warps[1 - i] * F32(4.0)
            bundle = np.cos(phase, out=phase)
            np.abs(bundle, out=bundle)
            fam.append((f, bundle))
        (f1, b1), (f2, b2) = fam
        cleft = b1 * F32(-10.0)
        cleft += F32(1.0)
        np.clip(cleft, 0, 1, out=cleft)
        cleft *= F32(self.bundle_detail)
        for f, b in fam:
            b *= F32(3.0)
            np.minimum(b, 1, out=b)
            if self.bundle_detail < 1:
                b -= F32(_BUNDLE_MEAN)
                b *= F32(self.bundle_detail)
                b += F32(_BUNDLE_MEAN)
            f *= b
        blend = self.fibre_blend(ys, xs)
        blend -= F32(0.5)
        contrast = np.abs(blend)
        blend *= F32(4.0)
        blend += F32(0.5)
        np.clip(blend, 0, 1, out=blend)
        gate *= 1 - blend
        cleft *= gate
        f2 -= f1
        f2 *= blend
        f2 += f1
        # Full contrast inside a family's domain, 0.4 where the two cross over.
        contrast *= F32(2.4)
        contrast += F32(0.4)
        np.minimum(contrast, 1, out=contrast)
        f2 -= F32(0.5)
        f2 *= contrast
        f2 += F32(0.5)
        return f2, cleft

    def fibre_direction(self, y, x):
        """Angle (radians) along which fibres run, at scattered points."""
        key, cell, _ = self.fibre_blend.terms[0]
        b = value_noise_at(key, y, x, cell)
        a1, a2 = self.fibre_angles
        return np.where(b < 0.5, a1, a2) + np.pi / 2

    # --- glands -------------------------------------------------------------

    def _gland_table(self, gy, gx) -> dict:
        """Parameters of the gland of each grid cell (gy, gx), 1-D arrays."""
        g = self.gland_cell
        u = uniforms(self.key[_S_GLAND], 14, gy, gx)
        cy = (gy + 0.5 + GLAND_JITTER * (u[:, 0] - 0.5)) * g
        cx = (gx + 0.5 + GLAND_JITTER * (u[:, 1] - 0.5)) * g
        region = value_noise_at(self.key[_S_GREGION], cy, cx, self.px(GLAND_REGION_UM))
        a = self.px(_lerp(u[:, 3], *GLAND_RADIUS_UM))
        b = a * _lerp(u[:, 4], *GLAND_ASPECT)
        ang = np.pi * u[:, 5]
        c, s = np.cos(ang), np.sin(ang)
        r_mean = np.sqrt(a * b)
        thick = self.px(_lerp(u[:, 12], *GLAND_EPITHELIUM_UM))
        grow = 1 + 6 * GLAND_HARMONIC
        n_epi = np.maximum(8, np.round(2 * np.pi * r_mean * 0.85 / self.px(EPI_NUCLEUS_SPACING_UM)))
        return {
            "present": u[:, 2] < 0.65 * np.clip((region - 0.4) / 0.2, 0, 1),
            "cy": cy,
            "cx": cx,
            "a": a,
            "b": b,
            "cos": c,
            "sin": s,
            "harm": (GLAND_HARMONIC * (2 * u[:, 6:12] - 1)).T,
            "r_mean": r_mean,
            "q_in": 1 - thick / r_mean,
            "secretion": u[:, 13] < 0.35,
            # Half extents of the bounding box of the (perturbed) rotated ellipse.
            "ext_y": np.hypot(a * s, b * c) * grow + 2,
            "ext_x": np.hypot(a * c, b * s) * grow + 2,
            "n_epi": n_epi.astype(np.int64),
            "phase": 2 * np.pi * to_unit(hash_coords(self.key[_S_EPIPHASE], gy, gx)),
            "gy": gy,
            "gx": gx,
        }

    def glands(self, y0, y1, x0, x1) -> dict:
        """Glands whose outline can reach the window [y0, y1) × [x0, x1)."""
        g, m = self.gland_cell, self.gland_max_extent
        gy = np.arange(int(np.floor((y0 - m) / g)), int(np.floor((y1 + m) / g)) + 1)
        gx = np.arange(int(np.floor((x0 - m) / g)), int(np.floor((x1 + m) / g)) + 1)
        gy, gx = (v.ravel() for v in np.meshgrid(gy, gx, indexing="ij"))
        table = self._gland_table(gy, gx)
        keep = table["present"]
        return {k: v[..., keep] for k, v in table.items()}

    def gland_maps_dense(self, ys, xs):
        """`gland_maps` for coarse renderings, vectorised over pixels.

        A gland lies inside its own grid cell (the centre stays within the
        middle 25 % and the radius below 37.5 % of the cell), so every pixel
        only needs the gland of its own cell: one gather per parameter instead
        of a loop over hundreds of glands. Cell-border lines are finer than a
        pixel here and are left out.
        """
        g = self.gland_cell
        gy = np.floor(ys / g).astype(np.int64)
        gx = np.floor(xs / g).astype(np.int64)
        cy_, cx_ = np.arange(gy[0], gy[-1] + 1), np.arange(gx[0], gx[-1] + 1)
        table = self._gland_table(np.repeat(cy_, len(cx_)), np.tile(cx_, len(cy_)))
        if not table["present"].any():
            return None, None, None, None
        idx = (gy - gy[0])[:, None] * len(cx_) + (gx - gx[0])[None, :]
        dy = (ys[:, None] - table["cy"][idx]).astype(F32)
        dx = (xs[None, :] - table["cx"][idx]).astype(F32)
        q, _, _ = self._gland_q(table, idx, dy, dx)
        r = table["r_mean"][idx].astype(F32)
        present = table["present"][idx]
        outer = np.clip((1 - q) * r + F32(0.5), 0, 1)
        inner = np.clip((table["q_in"][idx].astype(F32) - q) * r + F32(0.5), 0, 1)
        outer -= inner
        outer *= present
        inner *= present
        secr = inner * table["secretion"][idx]
        return outer, inner, np.zeros_like(outer), secr

    @staticmethod
    def _gland_q(gl, i, dy, dx):
        """Normalised radius q (outline at q = 1) and normalised axes of gland(s) i.

        Parameters are cast to the offsets' dtype (float32 for pixel grids), as
        numpy would otherwise promote the whole computation to float64.
        """

        def par(name):
            return np.asarray(gl[name][..., i], dy.dtype)  # (..., i): harm is (6, n)

        c, s = par("cos"), par("sin")
        un = dx * c + dy * s
        un /= par("a")
        vn = dy * c - dx * s
        vn /= par("b")
        rho = np.sqrt(un * un + vn * vn)
        inv = 1 / np.maximum(rho, dy.dtype.type(1e-6))
        return rho / _outline(par("harm"), un * inv, vn * inv), un, vn

    def inside_glands(self, gl, y, x, margin=1.08):
        """True for points (1-D arrays) inside any gland's outline scaled by `margin`."""
        if len(gl["cy"]) == 0 or len(y) == 0:
            return np.zeros(len(y), bool)
        idx = np.arange(len(gl["cy"]))
        q, _, _ = self._gland_q(gl, idx, y[:, None] - gl["cy"], x[:, None] - gl["cx"])
        return (q < margin).any(axis=1)

    def gland_maps(self, gl, ys, xs):
        """Epithelium, lumen, cell-border and secretion maps of a window (or Nones)."""
        h, w = len(ys), len(xs)
        y0, x0 = ys[0], xs[0]
        epi = lum = border = secr = None
        for i in range(len(gl["cy"])):
            cy, cx, ey, ex = gl["cy"][i], gl["cx"][i], gl["ext_y"][i], gl["ext_x"][i]
            ya, yb = max(int(np.ceil(cy - ey - y0)), 0), min(int(np.floor(cy + ey - y0)) + 1, h)
            xa, xb = max(int(np.ceil(cx - ex - x0)), 0), min(int(np.floor(cx + ex - x0)) + 1, w)
            if ya >= yb or xa >= xb:
                continue
            if epi is None:
                epi, lum, border, secr = (np.zeros((h, w), F32) for _ in range(4))
            dy = (ys[ya:yb] - cy).astype(F32)[:, None]
            dx = (xs[xa:xb] - cx).astype(F32)[None, :]
            q, un, vn = self._gland_q(gl, i, dy, dx)
            r = F32(gl["r_mean"][i])
            outer = np.clip((1 - q) * r + F32(0.5), 0, 1)
            inner = np.clip((F32(gl["q_in"][i]) - q) * r + F32(0.5), 0, 1)
            outer -= inner
            # Faint eosinophilic lines where neighbouring epithelial cells meet,
            # midway between the nuclei placed by `epithelial_nuclei`.
            theta = np.arctan2(vn, un)
            theta -= F32(gl["phase"][i])
            theta *= F32(gl["n_epi"][i])
            line = np.cos(theta, out=theta)
            line += F32(0.8)
            line *= F32(-5.0)
            np.clip(line, 0, 1, out=line)
            line *= outer
            sl = (slice(ya, yb), slice(xa, xb))
            np.maximum(epi[sl], outer, out=epi[sl])
            np.maximum(lum[sl], inner, out=lum[sl])
            np.maximum(border[sl], line, out=border[sl])
            if gl["secretion"][i]:
                np.maximum(secr[sl], inner, out=secr[sl])
        return epi, lum, border, secr

    def epithelial_nuclei(self, gl) -> Nuclei:
        """Columnar nuclei along each gland's epithelium, long axis radial."""
        n_g = gl["n_epi"]
        g = np.repeat(np.arange(len(n_g)), n_g)
        k = np.arange(len(g)) - np.repeat(np.cumsum(n_g) - n_g, n_g)
        u = uniforms(self.key[_S_EPI], 8, gl["gy"][g], gl["gx"][g], k)
        theta = gl["phase"][g] + 2 * np.pi * (k + 0.3 * (u[:, 0] - 0.5)) / n_g[g]
        thick = 1 - gl["q_in"][g]
        # Basal position: about 40 % of the epithelium's thickness in from the outline.
        qn = 1 - thick * (0.4 + 0.05 * (u[:, 1] - 0.5))
        ct, st = np.cos(theta), np.sin(theta)
        rr = qn * _outline(gl["harm"][:, g], ct, st)
        uu, vv = gl["a"][g] * rr * ct, gl["b"][g] * rr * st
        c, s = gl["cos"][g], gl["sin"][g]
        dx, dy = uu * c - vv * s, uu * s + vv * c
        norm = np.maximum(np.hypot(dx, dy), 1e-6)
        a = np.minimum(self.px(_lerp(u[:, 2], *EPI_AXES_UM[0])), 0.45 * thick * gl["r_mean"][g])
        nuc = Nuclei.make(
            cy=gl["cy"][g] + dy,
            cx=gl["cx"][g] + dx,
            a=a,
            b=a * _lerp(u[:, 3], *EPI_AXES_UM[1]),
            cos=dx / norm,
            sin=dy / norm,
            h=_lerp(u[:, 4], 1.15, 1.65),
            tex=0.55,
            h2c=0.06 * (2 * u[:, 5] - 1),
            h3c=0.05 * (2 * u[:, 6] - 1),
            pos=u[:, 1],
        )
        return nuc.select(u[:, 7] > 0.08)  # a few nuclei lie outside the section plane

    # --- scattered nuclei ----------------------------------------------------

    def _cells(self, stream, cell_px, y0, y1, x0, x1, margin, n):
        cy = np.arange(
            int(np.floor((y0 - margin) / cell_px)), int(np.floor((y1 + margin) / cell_px)) + 1
        )
        cx = np.arange(
            int(np.floor((x0 - margin) / cell_px)), int(np.floor((x1 + margin) / cell_px)) + 1
        )
        u = uniforms(self.key[stream], n, cy[:, None], cx[None, :]).reshape(-1, n)
        cy = np.repeat(cy, len(cx))
        cx = np.tile(cx, len(cy) // len(cx))
        return (cy + u[:, 0]) * cell_px, (cx + u[:, 1]) * cell_px, u

    def _density_noise(self):
        # The stroma density octave: its key and cell, shared by the per-pixel
        # density map and the fibroblast placement.
        return hash_coords(self.key[_S_DENS], 0), self.px(DENSITY_CELL_UM)

    @staticmethod
    def _fibro_rate(dens):
        """Probability that a fibroblast grid cell holds a nucleus."""
        return 0.25 + 0.35 * dens

    @staticmethod
    def _lymph_rate(infl):
        """Probability that a lymphocyte grid cell holds a nucleus (dense aggregates)."""
        return 0.012 + 0.7 * np.clip((infl - 0.62) / 0.2, 0, 1)

    def expected_nuclei(self, ys, xs):
        """Expected nuclear coverage per pixel of each population, for coarse renderings.

        Occupancy rate × mean nuclear area / grid-cell area, with the means of
        the uniform size ranges above (a spindle's taper takes about a fifth of
        its ellipse), so the mean stain matches nuclei drawn one by one to
        within about 10 %. Epithelial coverage is per unit of epithelium. Returns
        float32 maps {"fibroblasts", "lymphocytes"} and the scalar "epithelium".
        """

        def mean(r):
            return (r[0] + r[1]) / 2

        fib_area = np.pi * mean(FIBRO_AXES_UM[0]) ** 2 * mean(FIBRO_AXES_UM[1]) * 0.8
        lym_area = np.pi * mean(LYMPH_AXES_UM[0]) ** 2 * mean(LYMPH_AXES_UM[1])
        epi_area = np.pi * mean(EPI_AXES_UM[0]) ** 2 * mean(EPI_AXES_UM[1])
        key, cell = self._density_noise()
        fib = self._fibro_rate(value_noise(key, ys, xs, cell))
        fib *= F32(fib_area / FIBRO_CELL_UM**2)
        infl = value_noise(self.key[_S_INFL], ys, xs, self.px(INFLAMMATION_UM))
        lym = self._lymph_rate(infl).astype(F32)
        lym *= F32(lym_area / LYMPH_CELL_UM**2)
        # Nuclei per µm of gland outline (0.85 of the circumference, 8 µm apart,
        # 92 % kept) over the epithelium's mean thickness.
        epi = 0.85 / EPI_NUCLEUS_SPACING_UM * 0.92 * epi_area / mean(GLAND_EPITHELIUM_UM)
        return {"fibroblasts": fib, "lymphocytes": lym, "epithelium": epi}

    def fibroblasts(self, y0, y1, x0, x1, margin, gl) -> Nuclei:
        cy, cx, u = self._cells(_S_FIBRO, self.px(FIBRO_CELL_UM), y0, y1, x0, x1, margin, 10)
        key, cell = self._density_noise()
        keep = u[:, 2] < self._fibro_rate(value_noise_at(key, cy, cx, cell))
        cy, cx, u = cy[keep], cx[keep], u[keep]
        keep = ~self.inside_glands(gl, cy, cx)
        cy, cx, u = cy[keep], cx[keep], u[keep]
        ang = self.fibre_direction(cy, cx) + 0.35 * (u[:, 3] - 0.5)
        a = self.px(_lerp(u[:, 4], *FIBRO_AXES_UM[0]))
        return Nuclei.make(
            cy=cy,
            cx=cx,
            a=a,
            b=np.maximum(a * _lerp(u[:, 5], *FIBRO_AXES_UM[1]), self.px(1.1)),
            cos=np.cos(ang),
            sin=np.sin(ang),
            h=_lerp(u[:, 6], 1.25, 1.85),
            tex=0.3,
            h3c=0.04 * (2 * u[:, 7] - 1),
            taper=2.5,
            bend=0.35 * (2 * u[:, 8] - 1),
            pos=u[:, 9],
        )

    def lymphocytes(self, y0, y1, x0, x1, margin, gl) -> Nuclei:
        cy, cx, u = self._cells(_S_LYMPH, self.px(LYMPH_CELL_UM), y0, y1, x0, x1, margin, 10)
        infl = value_noise_at(self.key[_S_INFL], cy, cx, self.px(INFLAMMATION_UM))
        keep = u[:, 2] < self._lymph_rate(infl)
        cy, cx, u = cy[keep], cx[keep], u[keep]
        keep = ~self.inside_glands(gl, cy, cx)
        cy, cx, u = cy[keep], cx[keep], u[keep]
        ang = np.pi * u[:, 3]
        a = self.px(_lerp(u[:, 4], *LYMPH_AXES_UM[0]))
        return Nuclei.make(
            cy=cy,
            cx=cx,
            a=a,
            b=a * _lerp(u[:, 5], *LYMPH_AXES_UM[1]),
            cos=np.cos(ang),
            sin=np.sin(ang),
            h=_lerp(u[:, 6], 1.6, 2.0),
            tex=0.15,
            h2c=0.04 * (2 * u[:, 7] - 1),
            h3s=0.04 * (2 * u[:, 8] - 1),
            pos=u[:, 9],
        )
