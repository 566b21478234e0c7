"""Sparse non-negative dictionary learning for stain separation, in torch.

Solves Vahadane et al.'s problem (IEEE TMI 2016)

    min_{S, C}  ½‖V − C S‖²_F + λ Σ C    s.t.  S ≥ 0, ‖S_i‖ = 1, C ≥ 0

for optical densities ``V`` (N×3), stain rows ``S`` (k×3) and concentrations
``C`` (N×k) by alternating minimisation. There are at most three stains, so
the non-negative lasso for ``C`` is solved *exactly* per pixel by trying
every support set (2^k − 1 small linear systems, vectorised over pixels) and
keeping the best feasible one — no iterative solver, no tolerance, no
spams/scikit-learn version dependence. The ``S`` step is least squares
projected onto non-negative unit rows.
"""

import itertools

import torch

from .base import mix


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
    starting from ``init``; deterministic (no randomness inside)."""
    v = v.to(torch.float64)
    planes = v.T.contiguous()
    s = _project(init.to(torch.float64), init.to(torch.float64))
    for _ in range(max_iter):
        c = nn_lasso(planes, s, lam)
        gram = c @ c.T
        if torch.linalg.matrix_rank(gram) < s.shape[0]:
            break  # a stain lost all its pixels; keep the last full dictionary
        new = _project(torch.linalg.solve(gram, c @ v), s)
        done = (new - s).abs().max() < tol
        s = new
        if done:
            break
    return s


def _project(s: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    s = s.clamp_min(0.0)
    norm = s.norm(dim=1, keepdim=True)
    return torch.where(norm > 1e-12, s / norm.clamp_min(1e-12), fallback)
