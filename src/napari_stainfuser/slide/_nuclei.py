"""Nuclei: a table of ellipses with irregular outlines, drawn by maximum.

Each nucleus is an ellipse (semi-axes a, b, rotated) whose outline is bent
(banana), tapered (spindle) and perturbed by harmonics of orders 2 and 3; its
hematoxylin follows a granular chromatin texture condensed under the nuclear
membrane. Drawing evaluates, per nucleus, only the pixels its outline can reach,
vectorised over all nuclei of a batch, and composites by maximum so that the
order of nuclei (and hence the chunking) does not matter.
"""

import numpy as np

F32 = np.float32


class Nuclei:
    """Nuclei as one (field × nucleus) float64 table; centres in global px.

    `pos` is a uniform compared with a marker's positive fraction; `ring` (the
    cell's membrane radius in nuclear radii, 0 for none) and `positive` (0/1)
    are set per marker by `for_marker`.
    """

    FIELDS = ("cy", "cx", "a", "b", "cos", "sin", "h", "tex", "h2c", "h2s", "h3c", "h3s")
    FIELDS += ("taper", "bend", "pos", "ring", "positive")
    _INDEX = {f: i for i, f in enumerate(FIELDS)}
    _DEFAULT = {"pos": 1.0}

    def __init__(self, data: np.ndarray):
        self.data = data

    @classmethod
    def make(cls, **arrays):
        n = len(arrays["cy"])
        data = np.empty((len(cls.FIELDS), n))
        for i, f in enumerate(cls.FIELDS):
            data[i] = arrays.get(f, cls._DEFAULT.get(f, 0.0))
        return cls(data)

    def __getattr__(self, name):
        i = Nuclei._INDEX.get(name)
        if i is None:
            raise AttributeError(name)
        return self.data[i]

    def __len__(self):
        return self.data.shape[1]

    def select(self, keep):
        return Nuclei(self.data[:, keep])

    def moved(self, dy, dx):
        """A copy with every centre moved by (dy, dx) pixels."""
        out = Nuclei(self.data.copy())
        out.data[self._INDEX["cy"]] += dy
        out.data[self._INDEX["cx"]] += dx
        return out

    def for_marker(self, fraction, ring):
        """A copy whose nuclei with pos < fraction are positive, with a membrane ring."""
        out = Nuclei(self.data.copy())
        out.data[self._INDEX["positive"]] = out.pos < fraction
        out.data[self._INDEX["ring"]] = ring or 0.0
        return out


def harmonics(c, s):
    """cos/sin of 2θ and 3θ from cos θ, sin θ (cheaper than trig calls)."""
    c2 = c * c - s * s
    s2 = 2 * c * s
    return c2, s2, c * c2 - s * s2, s * c2 + c * s2


class NucleusBatch:
    """Nuclei of similar size, prepared once per block for `splat`."""

    def __init__(self, nuc: Nuclei):
        self.nuc = nuc
        irr = np.abs(nuc.h2c) + np.abs(nuc.h2s) + np.abs(nuc.h3c) + np.abs(nuc.h3s)
        # Coverage is zero beyond q = max(ring, 1) + 0.5 / radius; the outline
        # factor is at most 1 + irr, so |un| <= lim; bending moves vn by at most
        # |bend| * lim². Beyond `bound` in normalised units nothing is drawn.
        lim = (np.maximum(nuc.ring, 1.0) + 0.5 / np.sqrt(nuc.a * nuc.b)) * (1 + irr)
        lim_v = lim + np.abs(nuc.bend) * lim * lim
        self.reach = np.hypot(nuc.a * lim, nuc.b * lim_v) + 0.5
        self.bound = (1.0001 * (lim * lim + lim_v * lim_v)).astype(F32)
        self.p32 = nuc.data.astype(F32)
        self.inv_a = (1 / nuc.a).astype(F32)
        self.inv_b = (1 / nuc.b).astype(F32)
        self.rad = np.sqrt(nuc.a * nuc.b).astype(F32)
        self.ring = np.maximum(nuc.ring, 1.0).astype(F32)
        self.any_bend, self.any_taper = bool(nuc.bend.any()), bool(nuc.taper.any())
        self.any_positive = bool(nuc.positive.any())

    def __len__(self):
        return len(self.nuc)


def splat(batch: NucleusBatch, y0, x0, h, w, tex, out_h, out_a, pos_out=None):
    """Composite nuclei into the window [y0, y0 + h) × [x0, x0 + w) by maximum.

    out_h receives hematoxylin density, out_a nuclear coverage (both h × w),
    pos_out (if given) the coverage of positive cells: their nucleus, or the
    whole cell out to `ring` nuclear radii for membrane markers. Each call
    evaluates square patches as large as its largest nucleus, so batches
    should hold nuclei of similar size.
    """
    if len(batch) == 0:
        return
    nuc, reach = batch.nuc, batch.reach
    near = np.nonzero(
        (nuc.cy + reach >= y0)
        & (nuc.cy - reach < y0 + h)
        & (nuc.cx + reach >= x0)
        & (nuc.cx - reach < x0 + w)
    )[0]
    if len(near) == 0:
        return
    cy, cx = nuc.cy[near], nuc.cx[near]
    half = int(np.ceil(reach[near].max()))
    off = np.arange(-half, half + 1)
    iy = np.floor(cy).astype(np.int64)
    ix = np.floor(cx).astype(np.int64)
    py = iy[:, None] + off
    px = ix[:, None] + off
    dy = (py - cy[:, None]).astype(F32)
    dx = (px - cx[:, None]).astype(F32)
    # Pixels outside the window get a far offset and drop out below: rotation
    # keeps u² + v² = dx² + dy², so their normalised radius is > 1e4 / max(a, b).
    dy[(py < y0) | (py >= y0 + h)] = 1e4
    dx[(px < x0) | (px >= x0 + w)] = 1e4
    # Normalised coordinates along the nucleus' axes are sums of a per-row and
    # a per-column term, so the whole patch costs one add each.
    p = batch.p32[:, near]
    cos, sin = p[Nuclei._INDEX["cos"]][:, None], p[Nuclei._INDEX["sin"]][:, None]
    ia, ib = batch.inv_a[near][:, None], batch.inv_b[near][:, None]
    un = (dy * (sin * ia))[:, :, None] + (dx * (cos * ia))[:, None, :]
    vn = (dy * (cos * ib))[:, :, None] - (dx * (sin * ib))[:, None, :]
    r2 = un * un
    r2 += vn * vn
    k, i, j = np.nonzero(r2 <= batch.bound[near][:, None, None])
    if len(k) == 0:
        return
    un, vn = un[k, i, j], vn[k, i, j]
    kn = near[k]

    def per(name):  # a per-nucleus parameter at each kept pixel
        return batch.p32[Nuclei._INDEX[name]][kn]

    u2 = un * un
    if batch.any_bend:
        vn -= per("bend") * u2
    rho2 = vn * vn
    if batch.any_taper:
        rho2 *= 1 + per("taper") * u2
    rho2 += u2
    rho = np.sqrt(rho2)
    inv = 1 / np.maximum(rho, F32(1e-6))
    un *= inv
    vn *= inv
    c2, s2, c3, s3 = harmonics(un, vn)
    c2 *= per("h2c")
    s2 *= per("h2s")
    c3 *= per("h3c")
    s3 *= per("h3s")
    c2 += s2
    c2 += c3
    c2 += s3
    c2 += 1
    q = np.divide(rho, c2, out=rho)
    rad = batch.rad[kn]
    alpha = (1 - q) * rad
    alpha += F32(0.5)
    np.clip(alpha, 0, 1, out=alpha)
    flat = (iy[k] - y0 + off[i]) * w + (ix[k] - x0 + off[j])
    tw = per("tex")
    # Chromatin: granular texture, condensed a little under the nuclear membrane.
    dens = tex.ravel()[flat]
    dens *= 2 * tw
    dens += 1 - tw
    rim = q - F32(0.6)
    rim *= F32(2.5)
    np.clip(rim, 0, 1, out=rim)
    rim *= F32(0.25)
    rim += 1
    dens *= rim
    dens *= per("h")
    dens *= alpha
    np.maximum.at(out_h.ravel(), flat, dens)
    np.maximum.at(out_a.ravel(), flat, alpha)
    if pos_out is not None and batch.any_positive:
        # With ring 0 (nuclear markers) the reach is 1: the nucleus' own coverage.
        cov = batch.ring[kn] - q
        cov *= rad
        cov += F32(0.5)
        np.clip(cov, 0, 1, out=cov)
        cov *= per("positive")
        np.maximum.at(pos_out.ravel(), flat, cov)
