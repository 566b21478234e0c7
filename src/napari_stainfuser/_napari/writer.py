"""npe2 writer: an image layer saved as a pyramidal OME-TIFF or OME-Zarr."""

from collections.abc import Sequence

import numpy as np

from ..errors import ParameterError
from ..slide import write_pyramid
from .background import pixels_of


def write_image(path: str, data, meta: dict) -> list[str]:
    """Write level 0 of an RGB image layer; lower levels are rebuilt by `write_pyramid`.

    A multiscale layer's data is a sequence of levels (napari passes its own
    ``MultiScaleData``, not a list); level 0 is written and the rest rebuilt.
    """
    multiscale = meta.get("multiscale", isinstance(data, Sequence) and not hasattr(data, "shape"))
    level0 = pixels_of(data[0] if multiscale else data)
    if not meta.get("rgb", level0.ndim == 3 and level0.shape[-1] in (3, 4)):
        raise ParameterError(f"{path}: only RGB image layers can be saved as slides")
    if level0.shape[-1] == 4:
        level0 = level0[..., :3]
    if level0.dtype != np.uint8:
        raise ParameterError(f"{path}: layer dtype {level0.dtype} is not uint8 RGB")
    # napari's save dialog has already asked before replacing a file.
    write_pyramid(level0, path, mpp=_layer_mpp(meta), overwrite=True)
    return [path]


def _layer_mpp(meta: dict) -> float | None:
    """µm/px from the layer's scale, trusted only when its units are microns."""
    scale = meta.get("scale")
    units = meta.get("units")
    if scale is None or units is None:
        return (meta.get("metadata") or {}).get("mpp")
    unit = str(units[-1])
    if unit not in ("micrometer", "um", "µm", "micron"):
        return None
    sy, sx = float(scale[-2]), float(scale[-1])
    return sx if abs(sy - sx) <= 1e-9 * max(sx, 1.0) else None
