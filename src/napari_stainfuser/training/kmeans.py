"""k-means in torch, used to pick target tiles that cover the colour variety.

Lloyd's algorithm with k-means++ seeding (Arthur & Vassilvitskii 2007) and
several restarts, the best by inertia kept. All randomness comes from one
seeded generator, so a given seed always picks the same tiles.
"""

from dataclasses import dataclass

import torch

from ..errors import ParameterError


@dataclass
class KMeansResult:
    centroids: torch.Tensor  # k×d
    labels: torch.Tensor  # n, int64
    inertia: float  # sum of squared distances to the assigned centroid


def _plus_plus_init(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=gen))
    centroids = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than k: any remaining point will do
            idx = int(torch.randint(n, (1,), generator=gen))
        else:
            idx = int(torch.multinomial(d2 / total, 1, generator=gen))
        centroids.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(1))
    return torch.stack(centroids)


def kmeans(
    x, k: int, *, seed: int = 0, n_init: int = 8, max_iter: int = 100, tol: float = 1e-6
) -> KMeansResult:
    """Cluster the rows of `x` (n×d) into `k` groups."""
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ParameterError(f"k-means needs an n×d feature matrix, got shape {tuple(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise ParameterError(f"k-means: k={k} must be between 1 and the {x.shape[0]} samples")
    gen = torch.Generator().manual_seed(int(seed))
    best = None
    for _ in range(max(1, n_init)):
        c = _plus_plus_init(x, k, gen)
        for _ in range(max_iter):
            labels = torch.cdist(x, c).argmin(1)
            new_c = c.clone()
            for j in range(k):
                members = x[labels == j]
                if len(members):  # an emptied cluster keeps its centroid
                    new_c[j] = members.mean(0)
            shift = float(((new_c - c) ** 2).sum())
            c = new_c
            if shift <= tol:
                break
        labels = torch.cdist(x, c).argmin(1)
        inertia = float(((x - c[labels]) ** 2).sum())
        if best is None or inertia < best.inertia:
            best = KMeansResult(c, labels, inertia)
    return best


def pick_representatives(features, k: int, *, seed: int = 0) -> list[int]:
    """Indices of `k` rows that cover the feature space: the member nearest each
    k-means centroid. Features are standardised first so no single one dominates."""
    f = torch.as_tensor(features, dtype=torch.float64)
    std = f.std(0, unbiased=False)
    f = (f - f.mean(0)) / torch.where(std > 0, std, torch.ones_like(std))
    result = kmeans(f, k, seed=seed)
    picks = []
    for j in range(k):
        members = torch.nonzero(result.labels == j).flatten()
        if len(members) == 0:
            continue
        d = ((f[members] - result.centroids[j]) ** 2).sum(1)
        picks.append(int(members[d.argmin()]))
    # Duplicate points can leave a cluster empty; fill up with the points farthest
    # from those already picked so we still return k distinct tiles.
    while len(picks) < k:
        d = torch.cdist(f, f[picks]).min(1).values
        d[picks] = -1
        picks.append(int(d.argmax()))
    return sorted(picks)
