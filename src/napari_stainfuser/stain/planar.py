"""Small colour matrices applied to planar pixels (one contiguous plane per channel)."""

import numpy as np
import torch


def mix(m, x) -> torch.Tensor:
    """``m @ x`` for a small matrix ``m`` (j×i) and planar pixels ``x`` (i×N: a
    tensor, or a sequence of i planes); returns a j×N tensor.

    Written as scalar multiply-adds over contiguous channel planes rather than
    a BLAS matmul: each pixel then gets exactly the same arithmetic whatever
    the batch size, which keeps the lookup table and the direct computation
    identical, and planes are faster than strided N×3 columns.
    """
    m = m.tolist() if isinstance(m, (torch.Tensor, np.ndarray)) else m
    rows = []
    for coeffs in m:
        acc = x[0] * coeffs[0]
        for i in range(1, len(coeffs)):
            acc += x[i] * coeffs[i]
        rows.append(acc)
    return torch.stack(rows)
