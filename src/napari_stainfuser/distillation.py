"""Distillation: any stainer's colours as a per-pixel map, at lookup-table speed.

:func:`distill` samples tissue tiles from a slide, stratified by colour so that
rare shades are represented, runs the teacher stainer on them, and fits a map
from each source colour to the teacher's output colour. The result is a
:class:`DistilledStainer`: per pixel, exact through the same 256³ lookup table
the classical methods use, so its output is identical for any tiling and runs at
their speed.

The map is a **regularised 3-D colour table** (33³ nodes, one every 8 grey
levels, trilinear between them), not a small network. Fitting it is one sparse
linear least-squares solve: the teacher's pixels pull the nodes around their
colours, a smoothness term (the discrete Laplacian of the table) fills nodes
between and beyond the sampled colours, and a weak pull toward the identity
keeps colours the slide never shows from drifting. It is deterministic (no
random initialisation or training schedule), takes seconds on a CPU, and the
table is 430 KB, small enough to travel to every dask worker.

What a per-pixel map cannot reproduce: a teacher whose output at a pixel
depends on its neighbourhood (StainFuser: texture, context, structure-aware
colour) is reduced to its average colour for each input colour. The fit report
(:attr:`DistilledStainer.report`) says how far the distilled output is from the
teacher's, as ΔE2000, on the teacher's own tiles and on held-out tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import ParameterError
from .stainer import StainerSpec, StainResult

GRID = 33
# Smoothness and identity weights, relative to the data term's mean weight per node.
SMOOTHNESS = 0.05
IDENTITY = 1e-3
# At most this many pixel pairs go into the fit (a seeded subsample).
MAX_PAIRS = 600_000


@dataclass(eq=False)
class DistilledStainer:
    """A per-pixel stainer from a fitted colour table (see the module docstring).

    table: GRID×GRID×GRID×3 float32, the output RGB (0-255) at each node colour.
    teacher: what it was distilled from (method and identity), for provenance.
    report: ΔE2000 of the distilled output against the teacher's, on the fit
        tiles and on held-out tiles (median and 95th percentile).
    """

    table: np.ndarray
    teacher: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    device: str = "cpu"
    name: str = "distilled"

    def __post_init__(self):
        t = np.asarray(self.table, np.float32)
        if t.shape != (GRID, GRID, GRID, 3) or not np.isfinite(t).all():
            raise ParameterError(f"table must be a finite {GRID}³×3 array, got {t.shape}")
        self.table = t
        self._lut_table = None

    @property
    def spec(self) -> StainerSpec:
        return StainerSpec(tile_size=512, overlap=0, mpp=None, per_pixel=True, device=self.device)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_lut_table"] = None  # 64 MB: each process builds its own
        return state

    def identity(self) -> dict:
        from .fingerprint import array_digest

        params = {k: v for k, v in self.teacher.items() if k != "identity"}
        return {
            "method": self.name,
            "params": {"teacher": params, "table": array_digest(self.table)},
            "teacher": self.teacher.get("identity"),
        }

    def map_colours(self, rgb: torch.Tensor) -> torch.Tensor:
        """Planar 3×N uint8 -> 3×N uint8 through the table (trilinear)."""
        t = torch.from_numpy(self.table)
        x = rgb.to(torch.float32) * ((GRID - 1) / 255.0)
        i0 = x.floor().clamp_(0, GRID - 2).to(torch.long)
        f = x - i0
        out = torch.zeros((rgb.shape[1], 3), dtype=torch.float32)
        for dr in (0, 1):
            wr = f[0] if dr else 1 - f[0]
            for dg in (0, 1):
                wg = f[1] if dg else 1 - f[1]
                for db in (0, 1):
                    wb = f[2] if db else 1 - f[2]
                    node = t[i0[0] + dr, i0[1] + dg, i0[2] + db]
                    out += (wr * wg * wb)[:, None] * node
        return out.round_().clamp_(0, 255).to(torch.uint8).T

    def _lut(self) -> np.ndarray:
        if self._lut_table is None:
            from .stain.lut import build_lut

            self._lut_table = build_lut(self.map_colours)
        return self._lut_table

    def prepare(self) -> DistilledStainer:
        self._lut()
        return self

    def transform(self, image: np.ndarray) -> np.ndarray:
        """An H×W×3 uint8 image through the map."""
        from .stain.lut import apply_lut

        a = np.asarray(image)
        if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8:
            raise ParameterError(f"image: expected H×W×3 uint8, got {a.shape} {a.dtype}")
        return apply_lut(self._lut(), a)

    def stain(self, tiles: torch.Tensor, noise=None) -> StainResult:
        from .stain.lut import apply_lut_planar

        if not isinstance(tiles, torch.Tensor) or tiles.dtype != torch.uint8 or tiles.ndim != 4:
            raise ParameterError("tiles must be a B×3×H×W uint8 torch tensor")
        return StainResult(torch.from_numpy(apply_lut_planar(self._lut(), tiles.cpu().numpy())))


def distill(
    teacher,
    slide,
    *,
    tiles: int = 64,
    seed: int = 0,
    level: int = 0,
    tile: int | None = None,
    overlap: int | None = None,
) -> DistilledStainer:
    """A per-pixel stainer that reproduces ``teacher``'s colours on ``slide``.

    teacher: any stainer (StainFuser, a classical method, a recipe); it is
        fitted to ``slide`` first when it needs slide statistics.
    slide: the slide (path, Slide or array) whose tissue the map is fitted on.
    tiles: how many tissue tiles the teacher stains (a fifth more, at least
        two, are held out to report the fit's error on colours it did not see).
    seed: the sampling seed (which tiles, which pixels), and the teacher's.
    level, tile, overlap: where and how the teacher's tiles are cut (None: its own).
    """
    from .job import SlideJob

    if isinstance(tiles, bool) or not isinstance(tiles, int) or not 1 <= tiles <= 4096:
        raise ParameterError(f"tiles: must be a whole number in 1..4096, got {tiles!r}")
    opened = SlideJob.create(
        slide, stainer=teacher, level=level, seed=seed, tile=tile, overlap=overlap
    ).open()
    plan, stainer = opened.plan, opened.stainer
    held = max(2, math.ceil(tiles / 5))
    chosen = _stratified(plan, opened, tiles + held, seed)
    if len(chosen) < 2:
        raise ParameterError("slide: too little tissue to distil from (fewer than 2 tissue tiles)")
    fit_tiles, test_tiles = (
        chosen[: max(1, len(chosen) - held)],
        chosen[max(1, len(chosen) - held) :],
    )
    pairs = _teacher_pairs(stainer, plan, fit_tiles, opened.batch_size)
    test = _teacher_pairs(stainer, plan, test_tiles, opened.batch_size) if test_tiles else None
    rng = np.random.default_rng(seed)
    src, dst = pairs
    if len(src) > MAX_PAIRS:
        keep = rng.choice(len(src), MAX_PAIRS, replace=False)
        src, dst = src[keep], dst[keep]
    table = fit_table(src, dst)
    from .stainers import stainer_identity

    ident = stainer_identity(stainer)
    student = DistilledStainer(
        table,
        teacher={
            "method": ident.get("method"), "tiles": len(fit_tiles), "seed": seed,
            "identity": ident,
        },
    )  # fmt: skip
    student.report = {
        "fit": _delta_e_report(student, *pairs, rng),
        "held_out": None if test is None else _delta_e_report(student, *test, rng),
        "tiles": {"fit": len(fit_tiles), "held_out": len(test_tiles)},
    }
    return student


def distilled_job(job, *, tiles: int = 64, batch_size: int | None = None):
    """``job`` (a :class:`~napari_stainfuser.job.SlideJob`) with its stainer replaced
    by the one distilled from it on the job's own slide, level, tiling and seed.
    Returns (the new job, the distilled stainer)."""
    from .job import SlideJob

    student = distill(
        job.stainer, job.slide, tiles=tiles, seed=job.seed, level=job.level, tile=job.tile,
        overlap=job.overlap,
    )  # fmt: skip
    new = SlideJob.create(
        job.slide, stainer=student, level=job.level, tissue=job.tissue, mpp=job.mpp,
        seed=job.seed, batch_size=batch_size,
    )  # fmt: skip
    return new, student


def fit_table(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The regularised GRID³ table mapping N×3 uint8 ``src`` colours to ``dst``."""
    from scipy import sparse
    from scipy.sparse.linalg import LinearOperator, cg

    n_nodes = GRID**3
    x = src.astype(np.float64) * ((GRID - 1) / 255.0)
    i0 = np.clip(np.floor(x).astype(np.int64), 0, GRID - 2)
    f = x - i0
    rows, cols, vals = [], [], []
    idx = np.arange(len(src))
    for dr in (0, 1):
        wr = f[:, 0] if dr else 1 - f[:, 0]
        for dg in (0, 1):
            wg = f[:, 1] if dg else 1 - f[:, 1]
            for db in (0, 1):
                wb = f[:, 2] if db else 1 - f[:, 2]
                node = ((i0[:, 0] + dr) * GRID + (i0[:, 1] + dg)) * GRID + (i0[:, 2] + db)
                rows.append(idx)
                cols.append(node)
                vals.append(wr * wg * wb)
    a = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(src), n_nodes),
    )
    ata = (a.T @ a).tocsr()
    scale = ata.diagonal().sum() / n_nodes  # the data term's mean weight per node
    system = (
        ata + (SMOOTHNESS * scale) * _gradient_energy() + (IDENTITY * scale) * sparse.eye(n_nodes)
    )
    grid = np.linspace(0.0, 255.0, GRID)
    ident = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(n_nodes, 3)
    rhs = a.T @ dst.astype(np.float64) + (IDENTITY * scale) * ident
    # Conjugate gradients with a Jacobi preconditioner, from the identity.
    system = system.tocsr()
    inv_diag = 1.0 / system.diagonal()
    precond = LinearOperator(system.shape, matvec=lambda v: inv_diag * v.ravel())
    out = np.empty((n_nodes, 3))
    for ch in range(3):
        sol, info = cg(system, rhs[:, ch], x0=ident[:, ch], rtol=1e-7, maxiter=2000, M=precond)
        out[:, ch] = sol
    return np.clip(out, 0, 255).reshape(GRID, GRID, GRID, 3).astype(np.float32)


def _gradient_energy():
    """Σ |∇T|² over the grid as a quadratic form (the graph Laplacian, PSD)."""
    from scipy import sparse

    diff = sparse.diags([-1.0, 1.0], [0, 1], shape=(GRID - 1, GRID))
    d1 = (diff.T @ diff).tocsr()
    eye = sparse.eye(GRID)
    return (
        sparse.kron(sparse.kron(d1, eye), eye)
        + sparse.kron(sparse.kron(eye, d1), eye)
        + sparse.kron(sparse.kron(eye, eye), d1)
    ).tocsr()


def _stratified(plan, opened, n: int, seed: int) -> list[tuple[int, int]]:
    """Up to ``n`` tissue tiles, spread over strata of the tiles' mean colour."""
    candidates = plan.tissue_tiles()
    if len(candidates) <= n:
        return candidates
    levels = opened.source.levels
    k = len(levels) - 1
    while k > 0 and max(levels[k].shape[:2]) < 512:
        k -= 1
    low = np.asarray(levels[k][:, :, :3])
    fy = low.shape[0] / plan.shape[0]
    fx = low.shape[1] / plan.shape[1]
    colours = []
    for r, c in candidates:
        y0, y1, x0, x1 = plan.footprint(r, c)
        patch = low[int(y0 * fy) : max(int(y0 * fy) + 1, int(y1 * fy)),
                    int(x0 * fx) : max(int(x0 * fx) + 1, int(x1 * fx))]  # fmt: skip
        colours.append(patch.reshape(-1, 3).mean(0))
    colours = np.asarray(colours)
    # Strata: darkness × hue (red minus blue), each cut at its quantiles.
    dark = -colours.mean(1)
    hue = colours[:, 0] - colours[:, 2]
    bins = max(1, int(math.sqrt(n)))
    qd = np.searchsorted(np.quantile(dark, np.linspace(0, 1, bins + 1)[1:-1]), dark)
    qh = np.searchsorted(np.quantile(hue, np.linspace(0, 1, bins + 1)[1:-1]), hue)
    strata: dict[int, list[int]] = {}
    for i, s in enumerate(qd * bins + qh):
        strata.setdefault(int(s), []).append(i)
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(v)) for _, v in sorted(strata.items())]
    picked: list[int] = []
    while len(picked) < n:
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(int(pool.pop()))
    order = rng.permutation(len(picked))
    return [candidates[picked[i]] for i in order]


def _teacher_pairs(stainer, plan, tiles, batch: int):
    """(source, teacher output) N×3 uint8 pixel pairs on the tissue of ``tiles``."""
    from .engine.worker import stain_batch
    from .stain.tissue import tissue_mask

    src, dst = [], []
    for i in range(0, len(tiles), max(1, batch)):
        group = tiles[i : i + batch]
        loaded = [plan.load(*rc) for rc in group]
        outs = stain_batch(stainer, [t for t, _ in loaded], [n for _, n in loaded])
        for (tile, _), out in zip(loaded, outs, strict=True):
            mask = tissue_mask(tile, name="tile").mask
            if mask.shape != tile.shape[:2] or not mask.any():
                mask = np.ones(tile.shape[:2], bool)
            src.append(tile[mask])
            dst.append(np.asarray(out.tile)[mask])
    return np.concatenate(src), np.concatenate(dst)


def _delta_e_report(student, src, dst, rng, n: int = 200_000) -> dict:
    from .stain.lab import delta_e_ciede2000, rgb_to_lab

    if len(src) > n:
        keep = rng.choice(len(src), n, replace=False)
        src, dst = src[keep], dst[keep]
    got = student.transform(src.reshape(-1, 1, 3)).reshape(-1, 3)
    de = delta_e_ciede2000(rgb_to_lab(torch.from_numpy(got)), rgb_to_lab(torch.from_numpy(dst)))
    de = de.double().numpy()
    return {
        "median": float(np.median(de)),
        "p95": float(np.percentile(de, 95)),
        "mean": float(de.mean()),
        "pixels": int(len(de)),
    }
