"""Whole-slide runs in this process: tiling independence, tissue, formats, refusals, resume."""

import time

import numpy as np
import pytest
from batch_cases import CLASSICAL, FAST, TARGET, read_level0, tiny_stainfuser
from PIL import Image

from napari_stainfuser.batch import normalize_slide, work_dir
from napari_stainfuser.errors import ParameterError, SlideWriteError, StainFuserError
from napari_stainfuser.stainer import StainerSpec, StainResult
from napari_stainfuser.stainers import make_stainer
from napari_stainfuser.tiling.tissue import detect_tissue


class Spy:
    """Passes every call to a real stainer and keeps what it was given."""

    def __init__(self, inner, spec=None):
        self.inner = inner
        self.spec = spec or inner.spec
        self.batches = []

    def stain(self, tiles, noise=None):
        self.batches.append(tiles.clone())
        return self.inner.stain(tiles, noise=noise)


def _whole_image_truth(stainer, image):
    """The stainer applied to the whole image at once, glass left as is."""
    switch = detect_tissue(image)
    mask = switch.region(image.shape[:2], 0, image.shape[0], 0, image.shape[1])
    return np.where(mask[..., None], stainer.transform(image), image), mask


@pytest.mark.parametrize("method", CLASSICAL)
def test_per_pixel_output_is_bit_identical_whatever_tile_and_overlap(method, cmu_crop, tmp_path):
    stainer = make_stainer(method, TARGET, slide=cmu_crop, **FAST)
    truth, mask = _whole_image_truth(stainer, cmu_crop)
    # 512 and 256: tiles are the output chunks; 200 and 96 (with overlap) go
    # through the tile cache and blending code instead.
    for tile, overlap in [(512, 0), (256, 64), (200, 0), (96, 95)]:
        out = normalize_slide(
            cmu_crop, tmp_path / f"{tile}-{overlap}.ome.zarr", stainer=stainer, tile=tile,
            overlap=overlap,
        )  # fmt: skip
        np.testing.assert_array_equal(
            read_level0(out), truth, err_msg=f"tile {tile} overlap {overlap}"
        )
    # The tissue really was stained and the glass really left alone.
    assert (truth[mask] != cmu_crop[mask]).any(-1).mean() > 0.5
    assert 0.2 < mask.mean() < 0.8


def test_per_pixel_identity_holds_on_a_synthetic_slide_with_the_lookup_table(synth, tmp_path):
    # The lookup-table path (the default for whole slides), on the other input kind.
    stainer = make_stainer("ruifrok", TARGET, slide=synth, max_pixels=20000)
    a = normalize_slide(synth, tmp_path / "a.ome.zarr", stainer=stainer, tile=512, tissue=False)
    b = normalize_slide(
        synth, tmp_path / "b.ome.zarr", stainer=stainer, tile=144, overlap=16, tissue=False
    )
    np.testing.assert_array_equal(read_level0(a), read_level0(b))
    np.testing.assert_array_equal(read_level0(a), stainer.transform(synth))


def test_glass_never_reaches_the_stainer_and_passes_through(cmu_crop, tmp_path):
    spy = Spy(make_stainer("macenko", TARGET, slide=cmu_crop, **FAST))
    out = read_level0(normalize_slide(cmu_crop, tmp_path / "o.ome.zarr", stainer=spy, tile=128))
    mask = detect_tissue(cmu_crop).region(cmu_crop.shape[:2], 0, 768, 0, 1024)
    np.testing.assert_array_equal(out[~mask], cmu_crop[~mask])
    seen = sum(len(b) for b in spy.batches)
    # 6 × 8 tiles, of which only those touching tissue were stained.
    per_tile = [
        mask[y : y + 128, x : x + 128].any()
        for y in range(0, 768, 128)
        for x in range(0, 1024, 128)
    ]
    assert seen == sum(per_tile) < 48


def test_ome_tiff_output_matches_ome_zarr_and_carries_the_pyramid(cmu_crop, tmp_path):
    stainer = make_stainer("reinhard", TARGET, slide=cmu_crop, **FAST)
    z = normalize_slide(cmu_crop, tmp_path / "o.ome.zarr", stainer=stainer, mpp=0.499)
    t = normalize_slide(
        cmu_crop, tmp_path / "o.ome.tif", stainer=stainer, mpp=0.499, compression="zlib"
    )
    np.testing.assert_array_equal(read_level0(t), read_level0(z))
    import tifffile

    with tifffile.TiffFile(t) as tf:
        assert tf.is_ome
        assert len(tf.series[0].levels) >= 1
        ome = tf.ome_metadata
    assert 'PhysicalSizeX="0.499"' in ome
    # No temporary or work files are left next to the outputs.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.ome.tif", "o.ome.zarr"]


def test_resampled_run_sees_half_resolution_tiles_and_returns_full_size(synth, tmp_path):
    class Identity:
        """A model trained at 0.5 µm/px that returns its input."""

        spec = StainerSpec(tile_size=96, overlap=16, mpp=0.5, per_pixel=False, batch_size=4)

        def stain(self, tiles, noise=None):
            return StainResult(tiles.clone())

    spy = Spy(Identity())
    img = synth[:320, :384]
    out = read_level0(
        normalize_slide(img, tmp_path / "o.ome.zarr", stainer=spy, mpp=0.25, tissue=False)
    )
    assert out.shape == img.shape
    # The working image is 160 × 192: tiles of 96 on a step of 80 -> 2 × 3 tiles.
    assert sum(len(b) for b in spy.batches) == 6
    half = np.asarray(Image.fromarray(img).resize((192, 160), Image.BILINEAR)).astype(int)
    # Tile (0, 0) leads the first group of four (groups run side by side).
    first = next(b for b in spy.batches if len(b) == 4)[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(first[4:-4, 4:-4] - half[4:92, 4:92]).max() <= 1
    # Down and up again: close to the input, as blurred as a 2× round trip.
    back = np.asarray(
        Image.fromarray(half.astype(np.uint8)).resize((384, 320), Image.BILINEAR)
    ).astype(int)
    assert np.abs(out[8:-8, 8:-8].astype(int) - back[8:-8, 8:-8]).max() <= 2


def test_existing_output_is_refused_unless_overwrite(cmu_crop, tmp_path):
    a, b = cmu_crop[-256:, -256:], cmu_crop[-512:-256, -256:]
    stainer = make_stainer("ruifrok", TARGET, slide=a, **FAST)
    out = tmp_path / "o.ome.zarr"
    normalize_slide(a, out, stainer=stainer, tissue=False)
    with pytest.raises(SlideWriteError, match="already exists"):
        normalize_slide(b, out, stainer=stainer, tissue=False)
    np.testing.assert_array_equal(read_level0(out), stainer.transform(a))
    normalize_slide(b, out, stainer=stainer, tissue=False, overwrite=True)
    np.testing.assert_array_equal(read_level0(out), stainer.transform(b))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"method": "macenko", "tile": 256, "overlap": 256}, "overlap: 256 must be smaller"),
        ({"method": "macenko", "tile": 256, "overlap": 300}, "overlap"),
        ({"method": "nonsense"}, "valid: macenko, reinhard, ruifrok, vahadane, stainfuser"),
        ({"method": "macenko", "scheduler": "local:x"}, "scheduler"),
        ({"method": "macenko", "level": 7}, "level: 7"),
        ({}, "method"),
    ],
)
def test_bad_parameters_are_one_line_errors(kw, match, cmu_crop, tmp_path):
    with pytest.raises(ParameterError, match=match) as e:
        normalize_slide(cmu_crop[:128, :128], tmp_path / "o.ome.zarr", target=TARGET, **kw)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "o.ome.zarr").exists()


def test_a_tile_size_the_stainer_cannot_take_is_refused(cmu_crop, tmp_path):
    with pytest.raises(ParameterError, match="multiple of 8"):
        normalize_slide(
            cmu_crop[:256, :256], tmp_path / "o.ome.zarr", stainer=tiny_stainfuser(), tile=100
        )
    with pytest.raises(ParameterError, match="latent grid"):
        normalize_slide(
            cmu_crop[:256, :256],
            tmp_path / "o.ome.zarr",
            stainer=tiny_stainfuser(),
            tile=128,
            overlap=12,
        )


def test_unknown_output_format(cmu_crop, tmp_path):
    with pytest.raises(ParameterError, match="unknown output format"):
        normalize_slide(cmu_crop, tmp_path / "o.png", method="macenko", target=TARGET)


def test_unreachable_cluster_fails_fast_with_a_clear_error(cmu_crop, tmp_path):
    stainer = make_stainer("ruifrok", TARGET, **FAST)
    t0 = time.monotonic()
    with pytest.raises(
        StainFuserError, match=r"cannot reach the dask scheduler at tcp://127\.0\.0\.1:9"
    ):
        normalize_slide(
            cmu_crop[:128, :128], tmp_path / "o.ome.zarr", stainer=stainer,
            scheduler="tcp://127.0.0.1:9", connect_timeout=2,
        )  # fmt: skip
    assert time.monotonic() - t0 < 15


class Interrupt(Exception):
    pass


def _interrupting(after):
    def cb(p):
        if p.phase == "stain" and p.done >= after:
            raise Interrupt

    return cb


def test_interrupted_run_resumes_to_the_same_output_and_checks_the_fingerprint(cmu_crop, tmp_path):
    stainer = make_stainer("vahadane", TARGET, slide=cmu_crop, **FAST)
    ref = read_level0(
        normalize_slide(
            cmu_crop, tmp_path / "ref.ome.zarr", stainer=stainer, tile=128, batch_size=2
        )
    )
    out = tmp_path / "o.ome.zarr"
    with pytest.raises(Interrupt):
        normalize_slide(
            cmu_crop, out, stainer=stainer, tile=128, batch_size=2, progress=_interrupting(6)
        )
    assert work_dir(out).is_dir() and not out.exists()
    # Starting again over an interrupted run needs a decision.
    with pytest.raises(SlideWriteError, match="resume=True"):
        normalize_slide(cmu_crop, out, stainer=stainer, tile=128)
    # Resuming with other parameters is refused, naming what differs.
    with pytest.raises(ParameterError, match="plan.tile"):
        normalize_slide(cmu_crop, out, stainer=stainer, tile=256, resume=True)
    other = make_stainer("macenko", TARGET, slide=cmu_crop, **FAST)
    with pytest.raises(ParameterError, match="stainer"):
        normalize_slide(cmu_crop, out, stainer=other, tile=128, resume=True)
    seen = []
    normalize_slide(
        cmu_crop, out, stainer=stainer, tile=128, batch_size=2, resume=True, progress=seen.append
    )
    first = next(p for p in seen if p.phase == "stain")
    assert first.done >= 6  # finished tiles were skipped
    np.testing.assert_array_equal(read_level0(out), ref)
    assert not work_dir(out).exists()
    # Resuming a finished job is a no-op; resuming another job over it is refused.
    normalize_slide(cmu_crop, out, stainer=stainer, tile=128, batch_size=2, resume=True)
    with pytest.raises(SlideWriteError, match="already exists"):
        normalize_slide(cmu_crop, out, stainer=other, tile=128, resume=True)


def test_a_normalizer_without_slide_statistics_is_fitted_on_the_slide(cmu_crop, tmp_path):
    # Per-tile statistics would make the output depend on the tiling.
    bare = make_stainer("macenko", TARGET, **FAST)
    assert bare.source_state is None
    a = normalize_slide(cmu_crop, tmp_path / "a.ome.zarr", stainer=bare, tile=512)
    b = normalize_slide(cmu_crop, tmp_path / "b.ome.zarr", stainer=bare, tile=128)
    np.testing.assert_array_equal(read_level0(a), read_level0(b))
    assert bare.source_state is None  # the caller's object is left as it was


def test_progress_reports_tiles_rate_and_eta(cmu_crop, tmp_path):
    stainer = make_stainer("ruifrok", TARGET, **FAST)
    seen = []
    normalize_slide(
        cmu_crop, tmp_path / "o.ome.zarr", stainer=stainer, tile=128, progress=seen.append
    )
    stain = [p for p in seen if p.phase == "stain"]
    assert stain[0].done == 0 and stain[-1].done == stain[-1].total == 48
    assert stain[-1].rate > 0 and stain[-1].eta_s == 0
    phases = [p.phase for p in seen]
    assert phases[:2] == ["open", "fit"] and phases[-3:] == ["pyramid", "write", "done"]


def test_a_slide_of_glass_only_passes_through_with_a_warning(tmp_path):
    from napari_stainfuser.stain.lab import delta_e2000_rgb

    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal((238, 236, 240), 2.0, (512, 640, 3)), 0, 255).astype(np.uint8)
    outs = {}
    for tissue in (True, False):
        with pytest.warns(UserWarning, match="too little tissue.*already in the target stain"):
            outs[tissue] = read_level0(
                normalize_slide(
                    glass, tmp_path / f"{tissue}.ome.zarr", method="macenko", target=TARGET,
                    tissue=tissue,
                )
            )  # fmt: skip
    # The tissue switch finds no tissue, so every pixel is copied through.
    np.testing.assert_array_equal(outs[True], glass)
    # Stained anyway, as if already in the target's stain, the glass stays glass
    # (Macenko drops the faint colour noise off its stain plane, so not bit-exact).
    assert float(delta_e2000_rgb(outs[False], glass).mean()) < 2.0
