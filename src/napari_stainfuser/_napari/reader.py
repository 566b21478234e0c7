"""npe2 reader: any slide `open_slide` understands becomes one multiscale RGB layer."""

from pathlib import Path

from ..errors import SlideReadError
from ..slide import open_slide
from .layers import slide_layer_data

_SUFFIXES = (".svs", ".ndpi", ".tif", ".tiff", ".zarr")


def get_reader(path):
    """A reader for one slide path, or None so napari lets another plugin try.

    Opening reads headers only, so deciding here is cheap. Greyscale and
    fluorescence TIFFs are declined (napari's own reader shows them); other
    read errors are reported when napari calls the reader, as one line.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if not p.name.lower().endswith(_SUFFIXES) and not (p / "zarr.json").exists():
        return None
    try:
        slide = open_slide(p)
    except SlideReadError as exc:
        if "not a brightfield RGB slide" in str(exc):
            return None
        return _failing_reader(exc)
    return lambda _path: [slide_layer_data(slide)]


def _failing_reader(exc: SlideReadError):
    def read(_path):
        raise exc

    return read
