"""Bad input to open_slide: one-line SlideReadError naming the file and the problem."""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from napari_stainfuser.errors import SlideReadError, StainFuserError
from napari_stainfuser.slide.reader import open_slide

CMU = Path(__file__).parents[1] / "data" / "CMU-1-Small-Region.svs"


def _fails(path: Path, match: str, compute: bool = False) -> str:
    with pytest.raises(SlideReadError, match=match) as info:
        slide = open_slide(path)
        if compute:
            slide.levels[0].compute()
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    assert isinstance(info.value, StainFuserError)
    return message


def test_missing_path(tmp_path):
    _fails(tmp_path / "nope.svs", "no such file")


def test_directory_that_is_not_a_zarr_store(tmp_path):
    folder = tmp_path / "slides"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    _fails(folder, "not a zarr store")


def test_zarr_group_without_multiscales(tmp_path):
    zarr.open_group(tmp_path / "g.zarr", mode="w", zarr_format=3).create_array(
        "0", shape=(10, 10, 3), dtype="uint8"
    )
    _fails(tmp_path / "g.zarr", "no OME-NGFF 'multiscales'")


def test_truncated_tiff(tmp_path):
    data = CMU.read_bytes()
    path = tmp_path / "half.svs"
    path.write_bytes(data[: len(data) // 2])
    _fails(path, "file is truncated")


def test_truncated_tiff_with_intact_header(tmp_path):
    path = tmp_path / "cut.tif"
    img = np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8)
    tifffile.imwrite(path, img, tile=(64, 64), photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].offset < min(tif.pages[0].dataoffsets)  # header first, then tiles
    path.write_bytes(path.read_bytes()[:100_000])
    _fails(path, "file is truncated: level 0 tile data ends at byte")


def test_bytes_overwritten_in_the_middle(tmp_path):
    data = bytearray(CMU.read_bytes())
    # 64 kB of zeros: larger than any tile of this file, so at least one whole tile is gone.
    middle = len(data) // 2
    data[middle : middle + 65536] = bytes(65536)
    path = tmp_path / "holed.svs"
    path.write_bytes(bytes(data))
    _fails(path, "level 0: tile at", compute=True)


def test_corrupt_tile_fails_only_when_read(tmp_path):
    path = tmp_path / "one-bad-tile.svs"
    shutil.copy(CMU, path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        nx = -(-page.imagewidth // page.tilewidth)
        ty, tx = 7, 5
        index = ty * nx + tx
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        good = page.asarray()[:240, :240]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * count)

    slide = open_slide(path)  # opening does not touch the tile
    level = slide.levels[0]
    np.testing.assert_array_equal(level[:240, :240].compute(), good)
    level[ty * 240 + 240 :, :].compute()  # everything below the bad tile's row reads fine
    y, x = ty * 240, tx * 240
    with pytest.raises(SlideReadError) as info:
        level[y + 10 : y + 20, x + 10 : x + 20].compute()
    message = str(info.value)
    assert str(path) in message and "level 0" in message and f"(y={y}, x={x})" in message
    with pytest.raises(SlideReadError, match=rf"\(y={y}, x={x}\)"):
        slide.read_region(y=y - 100, x=x - 100, height=400, width=400)


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.svs"
    path.write_text("these are not pixels\n" * 20)
    _fails(path, "not a supported image file")


def test_corrupt_tiff_header(tmp_path):
    path = tmp_path / "bad.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 100)
    _fails(path, "not a readable TIFF|truncated|corrupt")


def test_greyscale_tiff(tmp_path):
    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), tile=(32, 32))
    _fails(path, "not a brightfield RGB slide: level 0 is greyscale")


def test_16bit_rgb_tiff(tmp_path):
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint16), photometric="rgb", tile=(32, 32))
    _fails(path, "not a brightfield RGB slide: level 0 has 16-bit uint16")


def test_multichannel_fluorescence_ome_tiff(tmp_path):
    path = tmp_path / "fluo.ome.tif"
    tifffile.imwrite(path, np.zeros((4, 64, 64), np.uint16), metadata={"axes": "CYX"})
    _fails(path, "not a brightfield RGB slide")


def test_multichannel_8bit_ome_tiff(tmp_path):
    path = tmp_path / "fluo8.ome.tif"
    tifffile.imwrite(path, np.zeros((3, 64, 64), np.uint8), metadata={"axes": "CYX"})
    _fails(path, "not a brightfield RGB slide: level 0 is multichannel")


def test_palette_tiff(tmp_path):
    """Palette TIFFs are refused (palette PNGs are expanded to RGB: see test_slide_reader)."""
    path = tmp_path / "palette.tif"
    colormap = np.random.default_rng(0).integers(0, 65536, (3, 256), dtype=np.uint16)
    index = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)
    tifffile.imwrite(path, index, photometric="palette", colormap=colormap, tile=(32, 32))
    _fails(path, "not a brightfield RGB slide: level 0 is a palette .indexed-colour. image")


def test_greyscale_png(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(path)
    _fails(path, "not a brightfield RGB slide: PNG is greyscale")


def test_16bit_png(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.zeros((20, 30), np.uint16)).save(path)
    _fails(path, "not a brightfield RGB slide: PNG has 16-bit")


def test_greyscale_jpeg(tmp_path):
    path = tmp_path / "grey.jpg"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(path)
    _fails(path, "not a brightfield RGB slide: JPEG is greyscale")


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, "PNG"
    )
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _fails(path, "cannot decode image", compute=True)


@pytest.mark.parametrize(
    "shape,axes,dtype,problem",
    [
        ((5, 32, 32), "cyx", "uint8", "multichannel .* 5 channels"),
        ((1, 32, 32), "cyx", "uint8", "greyscale"),
        ((3, 32, 32), "cyx", "uint16", "uint16 samples"),
        ((2, 3, 32, 32), "zcyx", "uint8", "multi-plane: 2 z"),
    ],
)
def test_ome_zarr_not_brightfield(tmp_path, shape, axes, dtype, problem):
    path = tmp_path / "x.ome.zarr"
    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.create_array("0", shape=shape, dtype=dtype)
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [{"name": a, "type": "channel" if a == "c" else "space"} for a in axes],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [1.0] * len(axes)}
                        ],
                    }
                ],
            }
        ],
    }
    _fails(path, f"not a brightfield RGB slide: level 0 .*{problem}")


def test_corrupt_zarr_chunk_fails_when_read(tmp_path):
    path = tmp_path / "c.ome.zarr"
    root = zarr.open_group(path, mode="w", zarr_format=3)
    arr = root.create_array("0", shape=(3, 64, 64), chunks=(3, 32, 32), dtype="uint8")
    arr[...] = 200
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space"},
                    {"name": "x", "type": "space"},
                ],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0]}],
                    }
                ],
            }
        ],
    }
    (path / "0" / "c" / "0" / "1" / "1").write_bytes(b"garbage")
    slide = open_slide(path)
    assert (slide.levels[0][:32, :32].compute() == 200).all()
    with pytest.raises(SlideReadError, match=r"level 0: chunk at \(y=32, x=32\)"):
        slide.levels[0][32:, 32:].compute()
