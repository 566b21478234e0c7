"""Turn a Slide into napari layer data: one multiscale RGB image in µm."""

from pathlib import Path

from ..slide import Slide


def slide_layer_data(slide: Slide, name: str | None = None) -> tuple:
    """LayerData tuple for a slide: lazy multiscale levels, `scale` in µm when known."""
    kwargs = {
        "name": name or _display_name(slide.path),
        "rgb": True,
        "multiscale": len(slide.levels) > 1,
        "metadata": {
            "path": str(slide.path),
            "format": slide.format,
            "mpp": slide.mpp,
            "magnification": slide.magnification,
        },
    }
    if slide.mpp:
        kwargs["scale"] = (slide.mpp, slide.mpp)
        kwargs["units"] = ("um", "um")
    data = slide.levels if len(slide.levels) > 1 else slide.levels[0]
    return (data, kwargs, "image")


def _display_name(path: Path) -> str:
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem
