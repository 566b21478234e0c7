"""open_slide on a real Aperio slide and on files written here by tifffile, zarr and Pillow.

Every pixel check compares against something independent of our reader: the
array the file was written from (lossless codecs), tifffile's own decode, or
Pillow's JPEG decoder.
"""

import io
import pickle
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from napari_stainfuser.errors import ParameterError
from napari_stainfuser.slide import _tiff
from napari_stainfuser.slide.reader import Slide, open_slide

DATA = Path(__file__).parents[1] / "data"
CMU = DATA / "CMU-1-Small-Region.svs"


def _area_average(img: np.ndarray) -> np.ndarray:
    """2×2 mean, rounded half up, by float arithmetic (independent of pyramid.py)."""
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    blocks = img[:h, :w].astype(np.float64).reshape(h // 2, 2, w // 2, 2, -1)
    return np.floor(blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def _tissue(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus noise: compresses like an image, every pixel distinct."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 0.37) % 256, (y * 0.53) % 256, ((x + y) * 0.21) % 256], -1)
    return (base + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)


def _halves(img: np.ndarray, n: int) -> list[np.ndarray]:
    out = [img]
    for _ in range(n - 1):
        out.append(np.ascontiguousarray(out[-1][::2, ::2]))
    return out


def _tiles_touched(y0, y1, x0, x1, tile):
    return len(range(y0 // tile, -(-y1 // tile))) * len(range(x0 // tile, -(-x1 // tile)))


class _CountReads:
    def __init__(self, monkeypatch):
        self.calls = []
        original = _tiff._File.read

        def read(file, offset, count):
            self.calls.append(offset)
            return original(file, offset, count)

        monkeypatch.setattr(_tiff._File, "read", read)


# --- the real Aperio slide -------------------------------------------------


def test_cmu_shape_mpp_magnification():
    slide = open_slide(CMU)
    with tifffile.TiffFile(CMU) as tif:
        tags = tif.pages[0].tags
        height, width = tags["ImageLength"].value, tags["ImageWidth"].value
    # The description says "2220x2967" (width × height); arrays are Y × X.
    assert (height, width) == (2967, 2220)
    assert slide.levels[0].shape == (2967, 2220, 3)
    assert slide.levels[0].dtype == np.uint8
    assert slide.mpp == pytest.approx(0.499)
    assert slide.magnification == 20
    assert slide.format == "aperio-svs"
    assert slide.path == CMU


def test_cmu_region_equals_tifffile_decode():
    slide = open_slide(CMU)
    y, x = 1013, 707  # not tile-aligned: the region spans partial tiles
    ref = tifffile.imread(CMU, key=0)[y : y + 512, x : x + 512]
    np.testing.assert_array_equal(slide.levels[0][y : y + 512, x : x + 512].compute(), ref)
    np.testing.assert_array_equal(slide.read_region(y=y, x=x, height=512, width=512), ref)


def test_cmu_chunks_are_native_tiles():
    slide = open_slide(CMU)
    with tifffile.TiffFile(CMU) as tif:
        tile = (tif.pages[0].tilelength, tif.pages[0].tilewidth)
    assert tile == (240, 240)
    ys, xs, cs = slide.levels[0].chunks
    assert ys == (240,) * 12 + (2967 - 12 * 240,)
    assert xs == (240,) * 9 + (2220 - 9 * 240,)
    assert cs == (3,)


def test_cmu_associated_images_match_tifffile():
    slide = open_slide(CMU)
    with tifffile.TiffFile(CMU) as tif:
        expected = {s.name.lower(): s.asarray() for s in tif.series[1:]}
    assert sorted(slide.associated) == ["label", "macro", "thumbnail"] == sorted(expected)
    for name, ref in expected.items():
        np.testing.assert_array_equal(slide.associated[name].compute(), ref)


def test_cmu_missing_pyramid_is_built_by_area_averaging():
    slide = open_slide(CMU)
    with tifffile.TiffFile(CMU) as tif:
        assert len(tif.series[0].levels) == 1  # the file stores no lower level
        level0 = tif.pages[0].asarray()
    assert slide.native_levels == 1
    assert [lv.shape for lv in slide.levels] == [(2967, 2220, 3), (1483, 1110, 3), (741, 555, 3)]
    np.testing.assert_array_equal(slide.levels[1].compute(), _area_average(level0))
    assert slide.downsamples == [1.0, 2.0, 4.0]
    assert slide.level_mpp(2) == pytest.approx(4 * 0.499)
    np.testing.assert_array_equal(
        slide.read_region(y=100, x=200, height=300, width=400, level=1),
        _area_average(level0)[100:400, 200:600],
    )


def test_no_pixels_read_until_computed(monkeypatch):
    reads = _CountReads(monkeypatch)
    slide = open_slide(CMU)
    region = slide.levels[0][250:490, 250:731]
    low = slide.levels[2][:100, :100]
    assert reads.calls == []
    region.compute()
    assert len(reads.calls) == _tiles_touched(250, 490, 250, 731, 240) == 6
    # Built level 2 keeps 240² chunks; its first chunk covers 960² of level 0 (4×4 tiles).
    assert low.chunks[0][0] == 100 and slide.levels[2].chunks[0][0] == 240
    low.compute()
    assert len(reads.calls) == 6 + 16


def test_levels_pickle_small_and_reopen_the_file():
    slide = open_slide(CMU)
    region = slide.levels[0][500:900, 300:700]
    blob = pickle.dumps(region)
    # The tile table is re-read from the IFD after unpickling, not shipped.
    assert len(blob) < 20_000
    np.testing.assert_array_equal(pickle.loads(blob).compute(), region.compute())


def test_repr_and_read_region_bounds():
    slide = open_slide(CMU)
    text = repr(slide)
    assert "CMU-1-Small-Region.svs" in text and "aperio-svs" in text and "2967×2220" in text
    assert isinstance(slide, Slide)
    with pytest.raises(ParameterError, match="outside level 0"):
        slide.read_region(y=2900, x=0, height=100, width=100)
    with pytest.raises(ParameterError, match="level"):
        slide.read_region(y=0, x=0, height=10, width=10, level=7)


# --- TIFF family written with tifffile -------------------------------------

APERIO = "Aperio Image Library v12.0.15 \r\n{w}x{h} (64x64) J2K/KDU Q=70|AppMag = 40|MPP = 0.2525"


@pytest.mark.parametrize("compression", [33003, 33005])
def test_aperio_jpeg2000_svs(tmp_path, compression):
    """tifffile writes both codes as RGB codestreams (33003 with the codestream's MCT)."""
    img = _tissue(300, 420)
    lv1 = np.ascontiguousarray(img[::4, ::4])
    thumb, label, macro = _tissue(40, 56, 1), _tissue(30, 30, 2), _tissue(50, 120, 3)
    path = tmp_path / "j2k.svs"
    desc = APERIO.format(w=420, h=300)
    kw = {"photometric": "rgb", "metadata": None}
    with tifffile.TiffWriter(path) as w:
        w.write(img, tile=(64, 64), compression=compression, description=desc, **kw)
        w.write(thumb, description=desc, **kw)
        w.write(lv1, tile=(64, 64), compression=compression, description=desc, **kw)
        w.write(label, subfiletype=1, description="label", **kw)
        w.write(macro, subfiletype=9, description="macro", **kw)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == compression
    slide = open_slide(path)
    assert slide.format == "aperio-svs"
    assert slide.mpp == pytest.approx(0.2525) and slide.magnification == 40
    assert slide.native_levels == 2 and slide.levels[0].chunks[0][0] == 64
    # Lossless JPEG 2000: decoded pixels are the written pixels.
    np.testing.assert_array_equal(slide.levels[0].compute(), img)
    np.testing.assert_array_equal(slide.levels[1].compute(), lv1)
    assert slide.downsamples[1] == pytest.approx(4.0, rel=0.01)
    for name, ref in [("thumbnail", thumb), ("label", label), ("macro", macro)]:
        np.testing.assert_array_equal(slide.associated[name].compute(), ref)


def _jfif_ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """ITU-T T.871 (JFIF) full-range YCbCr → RGB in float64, rounded half up and clipped."""
    y, cb, cr = (ycc[..., i].astype(np.float64) for i in range(3))
    cb, cr = cb - 128, cr - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    return np.clip(np.floor(rgb + 0.5), 0, 255).astype(np.uint8)


def test_aperio_33003_ycbcr_tiles_are_converted_to_rgb(tmp_path):
    """Aperio 33003: each tile a JPEG 2000 codestream of YCbCr without MCT, tag says RGB."""
    rgb = _tissue(150, 200)  # 64² tiles: the last row and column are partial
    ycc = np.asarray(Image.fromarray(rgb).convert("YCbCr"))  # Pillow: full-range BT.601
    padded = np.pad(ycc, ((0, 192 - 150), (0, 256 - 200), (0, 0)), mode="edge")
    tiles = []
    for ty in range(3):
        for tx in range(4):
            block = np.ascontiguousarray(padded[ty * 64 : ty * 64 + 64, tx * 64 : tx * 64 + 64])
            data = imagecodecs.jpeg2k_encode(block, codecformat="J2K", mct=False)
            cod = data.index(b"\xff\x52")  # COD: marker, Lcod, Scod, order, layers, MCT
            assert data[cod + 8] == 0  # no multiple component transform
            # A plain decode (what tifffile does) returns the stored YCbCr samples.
            np.testing.assert_array_equal(imagecodecs.jpeg2k_decode(data), block)
            tiles.append(data)
    path = tmp_path / "ycbcr.svs"
    with tifffile.TiffWriter(path) as w:
        w.write(
            iter(tiles),
            shape=rgb.shape,
            dtype=np.uint8,
            tile=(64, 64),
            compression=33003,
            photometric="rgb",
            description=APERIO.format(w=200, h=150),
            metadata=None,
        )
    with tifffile.TiffFile(path) as tif:
        assert tif.is_svs and tif.pages[0].compression == 33003
    slide = open_slide(path)
    level0 = slide.levels[0].compute()
    np.testing.assert_array_equal(level0, _jfif_ycbcr_to_rgb(ycc))
    # Pillow's own YCbCr -> RGB (fixed-point, so within 1) of the same samples.
    pillow = np.asarray(Image.fromarray(ycc, "YCbCr").convert("RGB"))
    np.testing.assert_allclose(level0, pillow, atol=1, rtol=0)
    np.testing.assert_array_equal(
        slide.read_region(y=37, x=50, height=100, width=140), level0[37:137, 50:190]
    )
    # Lossless storage: only the 8-bit YCbCr round trip separates us from the original.
    roundtrip = np.abs(pillow.astype(int) - rgb).max()
    assert np.abs(level0.astype(int) - rgb).max() <= roundtrip + 1


def test_aperio_33003_ycbcr_422_tiles_match_pillow():
    """Real-layout 33003 file with 4:2:2 chroma (see tests/data/README.md).

    imagecodecs upsamples and converts subsampled codestreams itself; the
    reference is Pillow's independent JPEG 2000 decoder, tile by tile.
    """
    path = DATA / "aperio-j2k-ycbcr422.svs"
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert tif.is_svs and page.compression == 33003 and page.photometric == 2
        fh = tif.filehandle
        ref = np.empty((128, 128, 3), np.uint8)
        segments = zip(page.dataoffsets, page.databytecounts, strict=True)
        for i, (offset, count) in enumerate(segments):
            fh.seek(offset)
            codestream = fh.read(count)
            siz = codestream.index(b"\xff\x51")
            assert codestream[siz + 44 : siz + 46] == b"\x02\x01"  # Cb XRsiz, YRsiz: 4:2:2
            ty, tx = divmod(i, 2)
            tile = Image.open(io.BytesIO(codestream))
            ref[ty * 64 : ty * 64 + 64, tx * 64 : tx * 64 + 64] = np.asarray(tile.convert("RGB"))
    slide = open_slide(path)
    assert slide.mpp == pytest.approx(0.499) and slide.magnification == 20
    # OpenJPEG's and Pillow's integer YCbCr conversions round differently by at most 1.
    np.testing.assert_allclose(slide.levels[0].compute(), ref, atol=1, rtol=0)
    np.testing.assert_allclose(
        slide.read_region(y=20, x=30, height=90, width=80), ref[20:110, 30:110], atol=1
    )


def _ndpi_jpeg(img: np.ndarray, subsampling: int) -> tuple[bytes, list[int]]:
    """A baseline JPEG with restart markers and the offset of each restart interval."""
    buf = io.BytesIO()
    Image.fromarray(img).save(
        buf, "JPEG", quality=90, subsampling=subsampling, restart_marker_blocks=8
    )
    data = buf.getvalue()
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    rst = [
        i + 2
        for i in range(start, len(data) - 1)
        if data[i] == 0xFF and 0xD0 <= data[i + 1] <= 0xD7
    ]
    return data, [start, *rst]


def _write_ndpi_page(w, img, magnification, mpp, subsampling=2):
    data, starts = _ndpi_jpeg(img, subsampling)
    w.write(
        iter([data]),
        shape=img.shape,
        dtype=np.uint8,
        photometric="ycbcr",
        compression="jpeg",
        rowsperstrip=img.shape[0],
        subsampling=(1, 1) if subsampling == 0 else (2, 2),
        resolution=(1e4 / mpp, 1e4 / mpp),
        resolutionunit="CENTIMETER",
        metadata=None,
        extratags=[
            (271, "s", 0, "Hamamatsu", True),
            (65420, "I", 1, 1, True),  # NDPI FileFormat
            (65421, "f", 1, magnification, True),
            (65426, "I", len(starts), starts, True),  # McuStarts
        ],
    )
    return np.asarray(Image.open(io.BytesIO(data)))


def test_ndpi_restart_marker_tiles(tmp_path):
    """NDPI layout: one JPEG per level, tiled by restart intervals listed in McuStarts.

    tifffile cannot write the NDPI container (classic TIFF with 64-bit IFD
    offsets that tifffile assumes for the ``.ndpi`` extension), so this file is
    a classic TIFF named ``.tif`` carrying the NDPI tags; tifffile identifies
    NDPI by those tags and the reader takes the same code path as for real NDPI.
    """
    path = tmp_path / "slide.tif"
    img = _tissue(512, 768)
    with tifffile.TiffWriter(path) as w:
        refs = [
            _write_ndpi_page(w, img, 20.0, 0.456, subsampling=0),  # 4:4:4
            _write_ndpi_page(w, np.ascontiguousarray(img[::2, ::2]), 10.0, 0.912),  # 4:2:0
            _write_ndpi_page(w, _tissue(64, 256, 5), -1.0, 20.0),  # macro
        ]
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ndpi and [p.tile for p in tif.pages] == [(8, 64), (16, 128), (16, 128)]
        # tifffile's zarr store decodes NDPI tile-wise like we do (asarray decodes
        # small strips whole, which upsamples chroma across tile edges).
        tifffile_levels = [zarr.open(p.aszarr(), mode="r")[...] for p in tif.pages]
    slide = open_slide(path)
    assert slide.format == "ndpi"
    assert slide.mpp == pytest.approx(0.456) and slide.magnification == 20
    assert slide.native_levels == 2
    # 8-row restart-interval tiles are grouped (whole tiles) into 512-row chunks.
    assert slide.levels[0].chunks[:2] == ((512,), (64,) * 12)
    assert slide.levels[1].chunks[:2] == ((256,), (128,) * 3)
    # 4:4:4 has no chroma upsampling, so tile-wise decoding equals Pillow's whole-image decode.
    np.testing.assert_array_equal(slide.levels[0].compute(), refs[0])
    np.testing.assert_array_equal(
        slide.read_region(y=37, x=101, height=300, width=500), refs[0][37:337, 101:601]
    )
    # 4:2:0 chroma is upsampled within each tile: equal to tifffile's tile-wise decode,
    # and to Pillow's whole-image decode except on the pixels either side of a tile edge.
    level1 = slide.levels[1].compute()
    np.testing.assert_array_equal(level1, tifffile_levels[1])
    interior = np.ones(level1.shape[:2], bool)
    for edge in range(16, level1.shape[0], 16):
        interior[edge - 1 : edge + 1] = False
    for edge in range(128, level1.shape[1], 128):
        interior[:, edge - 1 : edge + 1] = False
    np.testing.assert_array_equal(level1[interior], refs[1][interior])
    np.testing.assert_array_equal(slide.associated["macro"].compute(), tifffile_levels[2])


def test_ome_tiff_subifd_pyramid(tmp_path):
    path = tmp_path / "sub.ome.tif"
    levels = _halves(_tissue(300, 400), 3)
    kw = {"tile": (64, 64), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path) as w:
        w.write(levels[0], subifds=2, metadata={"axes": "YXS", "PhysicalSizeX": 0.25}, **kw)
        for lv in levels[1:]:
            w.write(lv, subfiletype=1, **kw)
    slide = open_slide(path)
    assert slide.format == "ome-tiff" and slide.mpp == pytest.approx(0.25)
    assert slide.native_levels == 3 and slide.levels[0].chunks[0][0] == 64
    for ours, ref in zip(slide.levels, levels, strict=True):
        np.testing.assert_array_equal(ours.compute(), ref)


OME_SERIES = """<?xml version="1.0" encoding="UTF-8"?>
<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">
<Instrument ID="Instrument:0"><Objective ID="Objective:0" NominalMagnification="40.0"/>
</Instrument>
{images}
</OME>"""
OME_IMAGE = """<Image ID="Image:{i}" Name="{name}">
<ObjectiveSettings ID="Objective:0"/>
<Pixels ID="Pixels:{i}" DimensionOrder="XYCZT" Type="uint8" SizeX="{w}" SizeY="{h}" SizeC="3"
 SizeZ="1" SizeT="1" PhysicalSizeX="{ps}" PhysicalSizeXUnit="nm" PhysicalSizeY="{ps}"
 PhysicalSizeYUnit="nm"><Channel ID="Channel:{i}:0" SamplesPerPixel="3"/>
<TiffData IFD="{i}" PlaneCount="1"/></Pixels></Image>"""


def test_ome_tiff_pyramid_as_series(tmp_path):
    """Older OME-TIFF pyramids: one OME Image per level, plus a label image."""
    path = tmp_path / "series.ome.tif"
    levels = _halves(_tissue(320, 480), 3)
    label = _tissue(40, 40, 9)
    images = [(lv, f"level {i}") for i, lv in enumerate(levels)] + [(label, "label")]
    xml = OME_SERIES.format(
        images="".join(
            OME_IMAGE.format(i=i, name=n, w=a.shape[1], h=a.shape[0], ps=250 * a.shape[1] / 480)
            for i, (a, n) in enumerate(images)
        )
    )
    with tifffile.TiffWriter(path) as w:
        for i, (a, _) in enumerate(images):
            w.write(
                a,
                tile=(64, 64),
                photometric="rgb",
                description=xml if i == 0 else None,
                metadata=None,
            )
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and len(tif.series) == 4 and len(tif.series[0].levels) == 1
    slide = open_slide(path)
    assert slide.format == "ome-tiff"
    assert slide.mpp == pytest.approx(0.25)  # 250 nm
    assert slide.magnification == 40
    assert slide.native_levels == 3
    for ours, ref in zip(slide.levels, levels, strict=True):
        np.testing.assert_array_equal(ours.compute(), ref)
    np.testing.assert_array_equal(slide.associated["label"].compute(), label)


@pytest.mark.parametrize("subifds", [False, True])
def test_generic_pyramidal_tiff(tmp_path, subifds):
    path = tmp_path / "pyr.tif"
    levels = _halves(_tissue(256, 320), 3)
    kw = {"tile": (32, 48), "photometric": "rgb", "compression": "lzw", "metadata": None}
    with tifffile.TiffWriter(path) as w:
        w.write(
            levels[0],
            resolution=(20000, 20000),
            resolutionunit="CENTIMETER",
            subifds=2 if subifds else None,
            **kw,
        )
        for lv in levels[1:]:
            w.write(lv, subfiletype=1, **kw)
    slide = open_slide(path)
    assert slide.format == "tiff" and slide.mpp == pytest.approx(0.5)  # 20000 px/cm
    assert slide.native_levels == 3 and slide.levels[0].chunks[0][0] == 32
    assert slide.levels[0].chunks[1][0] == 48
    for ours, ref in zip(slide.levels, levels, strict=True):
        np.testing.assert_array_equal(ours.compute(), ref)


def test_tiled_tiff_without_pyramid_gets_lazy_levels(tmp_path):
    path = tmp_path / "flat.tif"
    img = _tissue(2300, 1100)
    tifffile.imwrite(
        path,
        img,
        tile=(256, 256),
        photometric="rgb",
        compression="zlib",
        resolution=(25400 / 0.5, 25400 / 0.5),
        resolutionunit="INCH",
    )
    slide = open_slide(path)
    assert slide.mpp == pytest.approx(0.5)  # 50,800 dpi
    assert [lv.shape[:2] for lv in slide.levels] == [(2300, 1100), (1150, 550), (575, 275)]
    assert slide.native_levels == 1 and slide.downsamples == [1.0, 2.0, 4.0]
    np.testing.assert_array_equal(slide.levels[1].compute(), _area_average(img))
    np.testing.assert_array_equal(slide.levels[2].compute(), _area_average(_area_average(img)))


def test_plain_tiff_strips_and_screen_dpi_ignored(tmp_path):
    path = tmp_path / "plain.tif"
    img = _tissue(300, 200)
    tifffile.imwrite(
        path, img, photometric="rgb", rowsperstrip=7, resolution=(72, 72), resolutionunit="INCH"
    )
    slide = open_slide(path)
    assert slide.format == "tiff"
    assert slide.mpp is None  # 72 dpi is a screen default, not a scan
    # 7-row strips are grouped into whole-strip chunks of >= 512 rows (here the image).
    assert slide.levels[0].chunks[:2] == ((300,), (200,))
    np.testing.assert_array_equal(slide.levels[0].compute(), img)
    np.testing.assert_array_equal(slide.levels[0][13:29, 5:9].compute(), img[13:29, 5:9])


def test_rgba_tiff_drops_alpha(tmp_path):
    path = tmp_path / "rgba.tif"
    img = np.concatenate([_tissue(100, 90), np.full((100, 90, 1), 7, np.uint8)], -1)
    tifffile.imwrite(path, img, photometric="rgb", tile=(32, 32), extrasamples=["unassalpha"])
    np.testing.assert_array_equal(open_slide(path).levels[0].compute(), img[..., :3])


def test_huge_pyramidal_tiff_opens_without_reading_tiles(tmp_path, monkeypatch):
    """100,000² level 0 (152,881 tiles): opening builds no per-tile graph and reads no tile."""
    path = tmp_path / "huge.tif"
    tile = np.full((256, 256, 3), 230, np.uint8)
    tile[::5, :, 0] = 90
    data = zlib.compress(tile.tobytes(), 9)
    size, kw = 100_000, {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path, bigtiff=True) as w:
        while size > 512:
            n = (-(-size // 256)) ** 2
            w.write(
                (data for _ in range(n)),
                shape=(size, size, 3),
                dtype=np.uint8,
                subfiletype=0 if size == 100_000 else 1,
                metadata=None,
                **kw,
            )
            size //= 2
    reads = _CountReads(monkeypatch)
    slide = open_slide(path)
    assert slide.levels[0].shape == (100_000, 100_000, 3)
    assert slide.native_levels == len(slide.levels) == 8
    assert reads.calls == []
    region = slide.levels[0][51_000:51_300, 77_000:77_100].compute()
    assert len(reads.calls) == _tiles_touched(51_000, 51_300, 77_000, 77_100, 256) == 4
    expected = np.tile(tile, (2, 2, 1))[51_000 % 256 :][:300, 77_000 % 256 :][:, :100]
    np.testing.assert_array_equal(region, expected)


# --- OME-Zarr written with plain zarr --------------------------------------


def _write_ome_zarr(path, levels, zarr_format, layout, mpp=0.5):
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    axes_names = {"cyx": "cyx", "yxc": "yxc", "tczyx": "tczyx"}[layout]
    datasets = []
    for k, lv in enumerate(levels):
        if layout == "cyx":
            a, chunks = np.moveaxis(lv, -1, 0), (3, 64, 64)
        elif layout == "yxc":
            a, chunks = lv, (64, 64, 3)
        else:
            a, chunks = np.moveaxis(lv, -1, 0)[None, :, None], (1, 1, 1, 64, 64)
        arr = root.create_array(str(k), shape=a.shape, chunks=chunks, dtype="uint8")
        arr[...] = a
        scale = [1.0 if n not in "yx" else mpp * 2**k for n in axes_names]
        datasets.append(
            {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    axes = [
        {"name": n, "type": "channel" if n == "c" else "space" if n in "zyx" else "time"}
        | ({"unit": "micrometer"} if n in "yx" else {})
        for n in axes_names
    ]
    ms = {"axes": axes, "datasets": datasets, "name": "image"}
    if zarr_format == 2:
        root.attrs["multiscales"] = [ms | {"version": "0.4"}]
    else:
        root.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}


@pytest.mark.parametrize(
    "zarr_format,layout", [(2, "cyx"), (2, "yxc"), (3, "cyx"), (3, "yxc"), (3, "tczyx")]
)
def test_ome_zarr(tmp_path, zarr_format, layout):
    path = tmp_path / "img.ome.zarr"
    levels = _halves(_tissue(200, 330), 2)
    _write_ome_zarr(path, levels, zarr_format, layout)
    slide = open_slide(path)
    assert slide.format == "ome-zarr" and slide.mpp == pytest.approx(0.5)
    assert slide.native_levels == 2
    assert slide.levels[0].chunks[0][0] == 64 and slide.levels[0].chunks[2] == (3,)
    for ours, ref in zip(slide.levels, levels, strict=True):
        np.testing.assert_array_equal(ours.compute(), ref)
    np.testing.assert_array_equal(
        slide.read_region(y=10, x=20, height=70, width=90), levels[0][10:80, 20:110]
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"scale": "half a micron"},  # not a number
        {"scale": None},
        {"scale": [0.5]},
        {"scale": -0.5},
        {"unit": "second"},  # not a length
        {"unit": None},
        {"transforms": "scale"},  # not a list of transforms
    ],
)
def test_ome_zarr_invalid_scale_gives_no_mpp(tmp_path, bad):
    """Malformed NGFF scale metadata leaves µm/px unknown; the pixels still read."""
    path = tmp_path / "bad-scale.ome.zarr"
    levels = _halves(_tissue(100, 120), 2)
    _write_ome_zarr(path, levels, 3, "yxc")
    root = zarr.open_group(path, mode="r+")
    ome = root.attrs["ome"]
    ms = ome["multiscales"][0]
    if "scale" in bad:
        ms["datasets"][0]["coordinateTransformations"][0]["scale"][1] = bad["scale"]
    if "unit" in bad:
        for axis in ms["axes"]:
            if axis["name"] in "yx":
                axis["unit"] = bad["unit"]
    if "transforms" in bad:
        ms["datasets"][0]["coordinateTransformations"] = bad["transforms"]
    root.attrs["ome"] = ome
    slide = open_slide(path)
    assert slide.mpp is None
    for ours, ref in zip(slide.levels, levels, strict=True):
        np.testing.assert_array_equal(ours.compute(), ref)


# --- plain images ------------------------------------------------------------


def test_png_rgb_and_rgba(tmp_path):
    img = _tissue(120, 90)
    rgba = np.concatenate([img, np.full((120, 90, 1), 128, np.uint8)], -1)
    Image.fromarray(img).save(tmp_path / "a.png", dpi=(300, 300))
    Image.fromarray(rgba).save(tmp_path / "b.png", dpi=(50800, 50800))
    a, b = open_slide(tmp_path / "a.png"), open_slide(tmp_path / "b.png")
    assert a.format == b.format == "png"
    assert a.mpp is None  # 300 dpi: print default
    assert b.mpp == pytest.approx(0.5, rel=1e-3)  # 50,800 dpi (pHYs stores px/m)
    np.testing.assert_array_equal(a.levels[0].compute(), img)
    np.testing.assert_array_equal(b.levels[0][5:50, 7:80].compute(), img[5:50, 7:80])


def test_jpeg_matches_pillow(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(_tissue(130, 170)).save(path, quality=85)
    slide = open_slide(path)
    assert slide.format == "jpeg" and slide.levels[0].shape == (130, 170, 3)
    np.testing.assert_array_equal(slide.levels[0].compute(), np.asarray(Image.open(path)))


@pytest.mark.parametrize("bits,transparency", [(8, None), (4, None), (1, None), (8, 0)])
def test_palette_png_is_expanded_to_rgb(tmp_path, bits, transparency):
    """Indexed-colour PNGs of any index depth read as their RGB colours; transparency is dropped."""
    rng = np.random.default_rng(bits)
    colours = 2**bits
    index = rng.integers(0, colours, (40, 70), dtype=np.uint8)
    image = Image.fromarray(index, "P")
    image.putpalette(rng.integers(0, 256, colours * 3, dtype=np.uint8).tobytes())
    path = tmp_path / "palette.png"
    extra = {} if transparency is None else {"transparency": transparency}
    image.save(path, bits=bits, **extra)
    header = path.read_bytes()[24:26]
    assert (header[0], header[1]) == (bits, 3)  # IHDR bit depth, colour type 3 = palette
    slide = open_slide(path)
    assert slide.format == "png" and slide.levels[0].shape == (40, 70, 3)
    reference = np.asarray(Image.open(path).convert("RGBA"))[..., :3]
    np.testing.assert_array_equal(slide.levels[0].compute(), reference)
