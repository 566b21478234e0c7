"""The output formats, their compressions and their options: the rules every writer checks.

Light (no tifffile, no zarr), so a command can refuse a bad option before
anything heavy loads.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ParameterError, opt

FORMATS = {".ome.tif": "ome-tiff", ".ome.tiff": "ome-tiff", ".ome.zarr": "ome-zarr"}
COMPRESSIONS = {
    "ome-tiff": ("jpeg", "zlib", "zstd", "lzw", None),
    "ome-zarr": ("zstd", "gzip", None),
}
# JPEG q=90 is what WSI scanners write (about 10× smaller than lossless);
# OME-Zarr output is lossless, zstd being fast at both ends.
DEFAULT_COMPRESSION = {"ome-tiff": "jpeg", "ome-zarr": "zstd"}


def output_format(path: str | Path, name: str = "output") -> str:
    """'ome-tiff' or 'ome-zarr' from the file name, else ParameterError naming option ``name``."""
    base = Path(path).name.lower()
    for ext, fmt in FORMATS.items():
        if base.endswith(ext) and len(base) > len(ext):
            return fmt
    raise ParameterError(
        f"{opt(name)}: {path}: unknown output format; use .ome.tif, .ome.tiff or .ome.zarr"
    )


def output_stem(path: str | Path) -> str:
    """The output's name without its format ending."""
    name = Path(path).name
    for ext in FORMATS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def check_compression(fmt: str, compression) -> str | None:
    """The compression's canonical name for ``fmt`` ("auto": the default)."""
    if isinstance(compression, str):
        compression = compression.strip().lower()
    if compression == "auto":
        return DEFAULT_COMPRESSION[fmt]
    if compression in ("none", ""):
        compression = None
    if compression == "zlib" and fmt == "ome-zarr":
        compression = "gzip"  # the same deflate stream, under zarr's name
    if compression not in COMPRESSIONS[fmt]:
        names = ", ".join("none" if c is None else c for c in COMPRESSIONS[fmt])
        raise ParameterError(
            f"{opt('compression')}: {compression!r} is not available for {fmt.upper()}; "
            f"choose one of {names}"
        )
    return compression


def check_quality(quality) -> int:
    ok = isinstance(quality, int) and not isinstance(quality, bool) and 1 <= quality <= 100
    if not ok:
        raise ParameterError(f"{opt('quality')}: expected a JPEG quality 1-100, got {quality!r}")
    return quality
