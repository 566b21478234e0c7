"""Stain matrices, rows are stains, columns are R, G, B optical density.

Ruifrok & Johnston, "Quantification of histochemical staining by color
deconvolution", Anal Quant Cytol Histol 23 (2001). Rows are unit-normalised.
"""

import math

import numpy as np

# Two stain vectors closer than this cannot be told apart (one colour, not two stains).
MIN_STAIN_ANGLE = math.radians(1.0)


def _unit_rows(m):
    m = np.asarray(m, dtype=np.float64)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


# Hematoxylin, eosin (Ruifrok & Johnston 2001, table 1).
RUIFROK_HE = _unit_rows([[0.650, 0.704, 0.286], [0.072, 0.990, 0.105]])

# Hematoxylin, DAB.
RUIFROK_HDAB = _unit_rows([[0.650, 0.704, 0.286], [0.268, 0.570, 0.776]])

# Hematoxylin, eosin, DAB.
RUIFROK_HEDAB = _unit_rows([[0.650, 0.704, 0.286], [0.072, 0.990, 0.105], [0.268, 0.570, 0.776]])

STAIN_MATRICES = {"he": RUIFROK_HE, "hdab": RUIFROK_HDAB, "hedab": RUIFROK_HEDAB}


def stain_matrix(name_or_rows):
    """Return a named stain matrix ('he', 'hdab', 'hedab') or validate custom rows."""
    from ..errors import ParameterError

    if isinstance(name_or_rows, str):
        key = name_or_rows.lower().replace("-", "").replace("&", "")
        if key not in STAIN_MATRICES:
            raise ParameterError(
                f"stain matrix {name_or_rows!r} is unknown; valid: {', '.join(STAIN_MATRICES)}"
            )
        return STAIN_MATRICES[key].copy()
    m = np.asarray(name_or_rows, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != 3 or not 1 <= m.shape[0] <= 3:
        raise ParameterError(f"stain matrix must have 1-3 rows of 3 OD values, got shape {m.shape}")
    if not np.all(np.isfinite(m)) or np.any(np.linalg.norm(m, axis=1) == 0):
        raise ParameterError("stain matrix rows must be finite and non-zero")
    return _unit_rows(m)
