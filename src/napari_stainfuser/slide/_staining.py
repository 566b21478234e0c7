"""Stain uptake of each tissue compartment: H&E and H-DAB immunohistochemistry.

Concentrations are in optical-density units along unit stain vectors (natural
log OD, see `synthetic`): a pixel's OD is ``C @ M``. Values are chosen so that the
Ruifrok vectors give the familiar look: pink stroma, purple-blue nuclei, white
glass and lumens; in IHC, pale blue counterstain and brown DAB.

A block is computed in strips of about 32k pixels: float32 temporaries then
stay at 128 KiB, small enough for the allocator to recycle from its heap;
larger ones are fresh pages every time (glibc maps them), and those page faults
cost more than the arithmetic.
"""

import numpy as np

from ._nuclei import F32, NucleusBatch, splat
from ._tissue import MEMBRANE_RING, TissueModel

# Reach of the largest nucleus (a fibroblast's tip, a lymphocyte's membrane): nuclei
# centred this far outside a window can still touch it. The soft edge adds at
# most about 2 px to the physical size, however coarse the µm/px.
NUCLEUS_MARGIN_UM = 16.0
NUCLEUS_MARGIN_PX = 3.0
STRIP_PIXELS = 1 << 15

# marker -> (cell populations, stained compartment, positive fraction).
MARKERS = {
    "CD3": (("lymphocytes",), "membrane", 0.75),  # T cells among lymphocytes
    "CK8/18": (("epithelium",), "cytoplasm", 1.0),  # luminal epithelial cytokeratins
    "Ki67": (("epithelium", "lymphocytes"), "nucleus", 0.3),  # proliferating nuclei
}


def strips(y0, y1, width):
    """Row ranges covering [y0, y1) with about STRIP_PIXELS pixels each."""
    rows = max(8, STRIP_PIXELS // max(width, 1))
    return [(s, min(s + rows, y1)) for s in range(y0, y1, rows)]


def _scaled(a, lo, span):
    """lo + span * a, in place."""
    a *= F32(span)
    a += F32(lo)
    return a


# Mean hematoxylin of each population's nuclei (the middle of its range in
# `_tissue`, times about 1.1 for chromatin condensed under the membrane), used
# when nuclei are rendered as expected coverage.
_MEAN_NUCLEAR_H = {"fibroblasts": 1.7, "lymphocytes": 2.0, "epithelium": 1.55}


class _Features:
    """Glands and nuclei that can reach one block (generated once per block)."""

    def __init__(self, model: TissueModel, y0, y1, x0, x1, marker=None, shift=(0.0, 0.0)):
        population, compartment, frac = MARKERS[marker] if marker else ((), None, None)
        self.marks_cells = compartment in ("membrane", "nucleus")
        self.marker = marker
        if model.coarse:
            return  # everything is computed per pixel
        m = model.px(NUCLEUS_MARGIN_UM) + NUCLEUS_MARGIN_PX
        self.glands = model.glands(y0 - m, y1 + m, x0 - m, x1 + m)
        nuclei = {
            "fibroblasts": model.fibroblasts(y0, y1, x0, x1, m, self.glands),
            "epithelium": model.epithelial_nuclei(self.glands),
            "lymphocytes": model.lymphocytes(y0, y1, x0, x1, m, self.glands),
        }
        if self.marks_cells:
            ring = MEMBRANE_RING if compartment == "membrane" else None
            for name in population:
                nuclei[name] = nuclei[name].for_marker(frac, ring)
        if shift != (0.0, 0.0):
            # Pixels sample the plane at index + shift: in pixel coordinates,
            # the nuclei move the other way.
            nuclei = {k: n.moved(-shift[0], -shift[1]) for k, n in nuclei.items()}
        # One batch per cell type: similar sizes, so similar patch sizes.
        self.batches = [NucleusBatch(n) for n in nuclei.values() if len(n)]


class _Strip:
    """Component maps of one strip of a block."""

    def __init__(self, model: TissueModel, feats: _Features, y0, x0, ys, xs, tm):
        h, w = len(ys), len(xs)
        self.tm = tm  # None where the strip is all tissue
        self.tex = model.texture(ys, xs)
        self.dens = _scaled(model.density(ys, xs), 0.7, 0.6)
        self.model, self.ys, self.xs = model, ys, xs
        if model.coarse:
            self.epi, self.lum, self.border, self.secr = model.gland_maps_dense(ys, xs)
            self._expected_nuclei(feats)
            return
        self.nuc_h = np.zeros((h, w), F32)
        self.nuc_a = np.zeros((h, w), F32)
        self.pos = np.zeros((h, w), F32) if feats.marks_cells else None
        for batch in feats.batches:
            splat(batch, y0, x0, h, w, self.tex, self.nuc_h, self.nuc_a, self.pos)
        self.epi, self.lum, self.border, self.secr = model.gland_maps(feats.glands, ys, xs)

    def _expected_nuclei(self, feats):
        cov = self.model.expected_nuclei(self.ys, self.xs)
        stroma = np.ones_like(cov["fibroblasts"])
        if self.epi is not None:
            stroma -= self.epi
            stroma -= self.lum
        cov["fibroblasts"] *= stroma
        cov["lymphocytes"] *= stroma
        cov["epithelium"] = (
            F32(cov["epithelium"]) * self.epi if self.epi is not None else np.zeros_like(stroma)
        )
        self.nuc_a = sum(cov.values())
        np.minimum(self.nuc_a, 1, out=self.nuc_a)
        self.nuc_h = sum(F32(_MEAN_NUCLEAR_H[k]) * v for k, v in cov.items())
        self.pos = None
        if feats.marks_cells:
            population, compartment, frac = MARKERS[feats.marker]
            area = MEMBRANE_RING**2 if compartment == "membrane" else 1.0
            self.pos = sum(cov[name] for name in population) * F32(frac * area)
            np.minimum(self.pos, 1, out=self.pos)

    def fibres(self):
        return self.model.fibres(self.ys, self.xs)


def _by_strip(model, y0, y1, x0, x1, n_out, compose, marker=None, shift=(0.0, 0.0)):
    out = np.zeros((y1 - y0, x1 - x0, n_out), F32)
    shift = (float(shift[0]), float(shift[1]))
    xs = np.arange(x0, x1, dtype=np.float64) + shift[1]
    ys_all = np.arange(y0, y1, dtype=np.float64) + shift[0]
    whole = model.tissue_constant(ys_all, xs)
    if whole == 0.0:
        return out  # glass: all stains zero
    feats = None
    for s0, s1 in strips(y0, y1, x1 - x0):
        ys = ys_all[s0 - y0 : s1 - y0]
        # tm None: tissue everywhere in the strip (coverage exactly 1).
        tm = None if whole == 1.0 else model.tissue(ys, xs)
        if tm is not None:
            if not tm.any():
                continue  # glass: all stains zero
            if tm.min() == 1.0:
                tm = None
        if feats is None:
            feats = _Features(model, y0, y1, x0, x1, marker, shift)
        compose(_Strip(model, feats, s0, x0, ys, xs, tm), out[s0 - y0 : s1 - y0])
    return out


# Optical density per unit hematoxylin, averaged over R, G, B (Ruifrok's vector).
_KAPPA_H = F32(0.55)


def _mix_in_intensity(bg, nuc_h, a):
    """Hematoxylin of a pixel that is `a` nucleus (nuc_h = a · its H) and 1 - a `bg`.

    Light mixes, not concentration: the pixel shows (1 - a) e^(-κ bg) + a e^(-κ H),
    which is lighter than e^(-κ ((1 - a) bg + nuc_h)). Without it, nuclei that
    cover part of a pixel are too dark, and a coarse rendering is darker than
    the area average of a fine one.
    """
    part = (a > 0) & (a < 1)
    out = bg * (1 - a)
    out += nuc_h
    if not part.any():
        return out
    ap, bp = a[part], bg[part]
    hn = nuc_h[part] / ap
    light = (1 - ap) * np.exp(-_KAPPA_H * bp) + ap * np.exp(-_KAPPA_H * hn)
    out[part] = -np.log(light) / _KAPPA_H
    return out


def _he(c: _Strip, out):
    grain = _scaled(c.tex.copy(), 0.85, 0.3)
    # Stroma: eosinophilic collagen with pale gaps and clefts, a trace of hematoxylin.
    fib, cleft = c.fibres()
    eos = _scaled(fib, 0.3, 0.7)
    eos *= c.dens
    cleft *= F32(-0.9)
    cleft += 1
    eos *= cleft
    eos *= grain
    eos *= F32(0.85)
    hem = c.dens * grain
    hem *= F32(0.06)
    if c.epi is not None:
        rest = 1 - c.epi
        rest -= c.lum
        eos *= rest
        hem *= rest
        # Epithelial cytoplasm: paler eosin, more hematoxylin, pink cell borders.
        cyto = _scaled(c.border.copy(), 0.45, 0.35)
        cyto *= grain
        cyto *= c.epi
        eos += cyto
        hem += c.epi * F32(0.25)
        c.secr *= c.tex
        c.secr *= F32(0.28)
        eos += c.secr
    nuc_a = c.nuc_a
    eos *= 1 - F32(0.8) * nuc_a
    hem = _mix_in_intensity(hem, c.nuc_h, nuc_a)
    if c.tm is not None:
        hem *= c.tm
        eos *= c.tm
    out[..., 0] = hem
    out[..., 1] = eos


def _ihc(marker):
    _, compartment, _ = MARKERS[marker]

    def compose(c: _Strip, out):
        grain = _scaled(c.tex.copy(), 0.8, 0.4)
        hem = c.dens * F32(0.06)
        nuc_a = c.nuc_a
        if c.epi is not None:
            hem *= 1 - c.epi - c.lum
            hem += c.epi * F32(0.12)
        hem *= 1 - nuc_a
        hem += c.nuc_h * F32(0.6)  # IHC counterstain is lighter than in H&E
        if compartment == "cytoplasm":
            if c.epi is None:
                cell = dab = np.zeros_like(nuc_a)
            else:
                # Cytokeratin fills the cytoplasm and is densest at the cell borders.
                cell = c.epi
                dab = cell * (1 - F32(0.8) * nuc_a)
                dab *= 1 + F32(0.6) * c.border
        elif compartment == "membrane":
            cell = c.pos
            # Membrane seen edge-on is darkest; above and below the nucleus it is
            # seen face-on, so the whole cell is brown, dark enough for the
            # published DAB threshold (tests/slide/test_synthetic.py).
            dab = np.clip(cell - nuc_a, 0, None)
            dab += F32(0.9) * cell
        else:
            cell = c.pos
            dab = F32(1.6) * cell
            hem *= 1 - F32(0.75) * cell
        dab *= grain
        if c.tm is not None:
            hem *= c.tm
            dab *= c.tm
        out[..., 0] = hem
        out[..., 1] = dab
        out[..., 2] = (cell >= 0.5) if c.tm is None else (cell >= 0.5) & (c.tm >= 0.5)

    return compose


def he_block(model: TissueModel, y0, y1, x0, x1, shift=(0.0, 0.0)) -> np.ndarray:
    """Hematoxylin and eosin concentrations of a window, h × w × 2 float32.

    Pixel (i, j) samples the plane at (i + shift[0], j + shift[1]) pixels.
    """
    return _by_strip(model, y0, y1, x0, x1, 2, _he, shift=shift)


def ihc_block(model: TissueModel, marker: str, y0, y1, x0, x1) -> np.ndarray:
    """Hematoxylin, DAB and the true-cell mask (0/1) of a window, h × w × 3 float32."""
    return _by_strip(model, y0, y1, x0, x1, 3, _ihc(marker), marker)
