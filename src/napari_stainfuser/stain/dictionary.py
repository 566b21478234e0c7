"""Sparse non-negative dictionary learning for stain separation, in torch.

Solves Vahadane et al.'s problem (IEEE TMI 2016)

    min_{S, C}  ½‖V − C S‖²_F + λ Σ C    s.t.  S ≥ 0, ‖S_i‖ = 1, C ≥ 0

for optical densities ``V`` (N×3), stain rows ``S`` (k×3) and concentrations
``C`` (N×k) by alternating minimisation. There are at most three stains, so
the non-negative lasso for ``C`` is solved *exactly* per pixel by trying
every support set (2^k − 1 small linear systems, vectorised over pixels) and
keeping the best feasible one — no iterative solver, no tolerance, no
spams/scikit-learn version dependence. The ``S`` step is block-coordinate
descent over the atoms (see :func:`learn_dictionary`).
"""

import itertools

import torch

from .planar import mix


def _supports(k: int) -> list[tuple[int, ...]]:
    return [s for r in range(1, k + 1) for s in itertools.combinations(range(k), r)]


def nn_lasso(y: torch.Tensor, stains: torch.Tensor, lam: float) -> torch.Tensor:
    """Exact ``argmin_{c ≥ 0} ½‖y − Sᵀc‖² + λ Σ c`` for every pixel of planar
    optical densities ``y`` (3×N).

    ``stains`` is k×3 with k ≤ 3. Returns k×N concentrations in ``y``'s dtype.
    """
    k = stains.shape[0]
    s64 = stains.detach().cpu().to(torch.float64)
    best_obj = 0.5 * (y * y).sum(dim=0)  # the empty support: c = 0
    best = torch.zeros(k, y.shape[1], dtype=y.dtype, device=y.device)
    for sup in _supports(k):
        sa = s64[list(sup)]
        g_inv = torch.linalg.pinv(sa @ sa.T)
        c = mix(g_inv @ sa, y)  # normal equations of the support, minus the λ shift
        c -= (lam * g_inv.sum(dim=1)).to(y)[:, None]
        resid = y - mix(sa.T, c)
        obj = 0.5 * (resid * resid).sum(dim=0) + lam * c.sum(dim=0)
        ok = (c >= 0).all(dim=0) & (obj < best_obj)
        best_obj = torch.where(ok, obj, best_obj)
        for i in range(k):
            value = c[sup.index(i)] if i in sup else torch.zeros_like(best[i])
            best[i] = torch.where(ok, value, best[i])
    return best


def learn_dictionary(
    v: torch.Tensor,
    init: torch.Tensor,
    lam: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-4,
) -> torch.Tensor:
    """Stain rows S (k×3, non-negative, unit) for optical densities ``v`` (N×3),
    starting from ``init``; deterministic (no randomness inside).

    Alternates the exact code step with one pass of block-coordinate descent
    over the atoms (Mairal et al., JMLR 2010, the algorithm behind spams'
    ``trainDL``): each atom in turn gets the exact minimiser of the objective
    over ``{s ≥ 0, ‖s‖ ≤ 1}``. Both steps are exact block minimisations, so
    the objective never increases. (Plain least squares followed by
    clamping and normalising rows is not: it ignores that rescaling an atom
    changes the λ term, and drifts to degenerate stains.)
    """
    v = v.to(torch.float64)
    planes = v.T.contiguous()
    s = _unit(init.to(torch.float64).clamp_min(0.0), init.to(torch.float64))
    for _ in range(max_iter):
        c = nn_lasso(planes, s, lam)
        a = c @ c.T  # k×k
        b = c @ v  # k×3
        new = s.clone()
        for j in range(s.shape[0]):
            if a[j, j] <= 1e-12:
                continue  # an atom no pixel uses: leave it
            u = (new[j] + (b[j] - a[j] @ new) / a[j, j]).clamp_min(0.0)
            norm = float(u.norm())
            if norm > 0.0:
                new[j] = u / max(norm, 1.0)
        done = float((new - s).abs().max()) < tol
        s = new
        if done:
            break
    return _unit(s, s)


def _unit(s: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    norm = s.norm(dim=1, keepdim=True)
    return torch.where(norm > 1e-12, s / norm.clamp_min(1e-12), fallback)
