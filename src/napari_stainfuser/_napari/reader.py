"""npe2 reader: any slide `open_slide` understands becomes one multiscale RGB layer."""

from pathlib import Path

from ..errors import SlideReadError
from ..slide import open_slide
from .layers import slide_layer_data

_SUFFIXES = (".svs", ".ndpi", ".tif", ".tiff", ".zarr")


def get_reader(path):
    """Return a reader for a single slide path, or None so napari tries other plugins."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if not p.name.lower().endswith(_SUFFIXES) and not (p / "zarr.json").exists():
        return None
    return read_slide


def read_slide(path):
    if isinstance(path, list):
        path = path[0]
    try:
        slide = open_slide(path)
    except SlideReadError:
        # Re-raise unchanged: napari shows the one-line message as a notification.
        raise
    return [slide_layer_data(slide)]
