"""The four normalizers behind one interface: contract, slide-level consistency,
physics (identity, stain recovery) and presets."""

import json

import numpy as np
import pytest
import torch
from stain_cases import DATA, METHODS, read_rgb

from napari_stainfuser.errors import ParameterError, StainEstimationError
from napari_stainfuser.slide import open_slide
from napari_stainfuser.slide.synthetic import MACENKO_REFERENCE_HE, SyntheticTissue
from napari_stainfuser.stain import (
    NORMALIZERS,
    RUIFROK_HE,
    StainNormalizer,
    get_normalizer,
    load,
    load_normalizer,
)
from napari_stainfuser.stainer import Stainer, StainResult
from napari_stainfuser.targets import fit_target


def _angles(estimated: np.ndarray, truth: np.ndarray) -> np.ndarray:
    e = estimated / np.linalg.norm(estimated, axis=1, keepdims=True)
    return np.degrees(np.arccos(np.clip((e * truth).sum(1), -1, 1)))


def test_registry_names_and_stainer_protocol():
    assert set(NORMALIZERS) == set(METHODS)
    for name in METHODS:
        norm = get_normalizer(name.upper())
        assert isinstance(norm, Stainer)
        spec = norm.spec
        assert spec.per_pixel and spec.deterministic and spec.overlap == 0


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ParameterError) as err:
        get_normalizer("staingan")
    msg = str(err.value)
    assert "'staingan'" in msg and "\n" not in msg
    assert all(m in msg for m in METHODS)


@pytest.mark.parametrize(
    ("method", "params", "named"),
    [
        ("macenko", {"alpha": 60}, "alpha"),
        ("macenko", {"io": 0}, "io"),
        ("macenko", {"colour": 1}, "'colour'"),
        ("vahadane", {"lam": -1}, "lam"),
        ("reinhard", {"white_knee": 120}, "white_knee"),
        ("ruifrok", {"stains": "trichrome"}, "stains"),
        ("macenko", {"seed": "x"}, "seed must be an integer"),
        ("reinhard", {"seed": 1.7}, "seed must be an integer"),
        ("vahadane", {"seed": None}, "seed must be an integer"),
        ("macenko", {"max_pixels": True}, "max_pixels must be an integer"),
        ("ruifrok", {"lut": "no"}, "lut must be None, True or False"),
    ],
)
def test_bad_parameters_are_named(method, params, named):
    with pytest.raises(ParameterError, match=named):
        get_normalizer(method, **params)


def test_transform_before_fit_is_an_error():
    with pytest.raises(ParameterError, match="fit"):
        get_normalizer("macenko").transform(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize("method", METHODS)
def test_transform_contract(method, images, fitted):
    norm = fitted(method)
    src = images["source"]
    out = norm.transform(src)
    assert out.dtype == np.uint8 and out.shape == src.shape
    assert np.abs(out.astype(int) - src).mean() > 2  # it did normalize
    np.testing.assert_array_equal(norm.transform(src), out)  # deterministic

    # A torch batch (no fixed source statistics): each image on its own stats.
    a, b = src[:200, :300], src[200:400, 250:550]
    batch = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2)
    res = norm.transform(batch)
    assert res.dtype == torch.uint8 and res.shape == batch.shape
    np.testing.assert_array_equal(res[0].permute(1, 2, 0).numpy(), norm.transform(a))
    np.testing.assert_array_equal(res[1].permute(1, 2, 0).numpy(), norm.transform(b))

    # Float in [0, 1] gives the same colours, unrounded.
    f = norm.transform(batch.float() / 255.0)
    assert f.dtype == torch.float32
    assert float((f * 255.0 - res.float()).abs().max()) <= 0.5 + 1e-3
    f64 = norm.transform(src.astype(np.float64) / 255.0)
    assert f64.dtype == np.float64
    assert np.abs(f64 * 255.0 - out).max() <= 0.5 + 1e-3

    result = norm.stain(batch)
    assert isinstance(result, StainResult)
    assert torch.equal(result.tiles, res)


@pytest.mark.parametrize("method", METHODS)
def test_slide_level_statistics_make_tiling_irrelevant(method, images, fitted):
    norm = fitted(method, slide_level=True)
    src = images["source"]
    whole = norm.transform(src)
    # Odd tile sizes that do not divide the image.
    tiled = np.empty_like(whole)
    for y in range(0, src.shape[0], 97):
        for x in range(0, src.shape[1], 131):
            tiled[y : y + 97, x : x + 131] = norm.transform(src[y : y + 97, x : x + 131])
    np.testing.assert_array_equal(tiled, whole)
    # The same through the stainer protocol on torch tiles.
    tile = torch.from_numpy(src[:128, :256]).permute(2, 0, 1)[None]
    np.testing.assert_array_equal(
        norm.stain(tile).tiles[0].permute(1, 2, 0).numpy(), whole[:128, :256]
    )
    # The lookup table equals the direct computation of the same map.
    direct = get_normalizer(method, lut=False)
    direct.target_state, direct.source_state = norm.target_state, norm.source_state
    np.testing.assert_array_equal(direct.transform(src), whole)


@pytest.mark.parametrize("method", ["reinhard", "ruifrok"])
def test_identity_when_source_and_target_are_the_same(method, images):
    # Reinhard standardises and de-standardises with the same numbers; Ruifrok
    # rescales every stain by 1. Both must give back the input.
    src = images["source"]
    norm = get_normalizer(method, lut=False).fit(src)
    norm.fit_source(src)
    assert np.abs(norm.transform(src).astype(int) - src).max() <= 1


@pytest.mark.parametrize("method", ["macenko", "vahadane"])
def test_stain_vectors_recovered_from_a_beer_lambert_rendering(method):
    # Physical ground truth: the synthetic tissue rendered with a known matrix.
    tissue = SyntheticTissue(seed=0, mpp=0.5)
    rgb = tissue.render_he((512, 512), stain_matrix=MACENKO_REFERENCE_HE).compute()
    est = get_normalizer(method).fit(rgb).target_state["stain_matrix"].numpy()
    assert np.all(_angles(est, MACENKO_REFERENCE_HE) < 3.0)
    rgb = tissue.render_he((512, 512), stain_matrix=RUIFROK_HE).compute()
    est = get_normalizer(method).fit(rgb).target_state["stain_matrix"].numpy()
    # Hematoxylin is found; this tissue has no pixel of pure Ruifrok eosin, so
    # the eosin direction is only approximate.
    angles = _angles(est, RUIFROK_HE)
    assert angles[0] < 3.0 and angles[1] < 15.0


def test_vahadane_is_deterministic_for_a_seed(images):
    # A small sample, so that the seed's choice of pixels shows in the result.
    def fit(seed):
        return get_normalizer("vahadane", seed=seed, max_pixels=4000).fit(images["target"])

    a = fit(3).target_state
    # The global generators must not matter: only the normalizer's own seed does.
    torch.manual_seed(12345)
    np.random.seed(12345)
    torch.rand(1000)
    b = fit(3).target_state
    for k in a:
        assert torch.equal(a[k], b[k]), k
    c = fit(4).target_state
    assert not torch.equal(a["stain_matrix"], c["stain_matrix"])


@pytest.mark.parametrize("method", METHODS)
def test_preset_round_trip(method, images, fitted, tmp_path):
    norm = fitted(method)
    path = norm.save(tmp_path / f"{method}.json")
    data = json.loads(path.read_text())
    assert data["method"] == method and data["version"] == 1
    assert path.stat().st_size < 2048
    loaded = load_normalizer(path)
    assert type(loaded) is type(norm)
    np.testing.assert_array_equal(
        loaded.transform(images["source"]), norm.transform(images["source"])
    )
    via_fit_target = fit_target(method, str(path))
    assert via_fit_target.get_params() == norm.get_params()


@pytest.mark.parametrize("method", METHODS)
def test_load_classmethod_checks_the_method(method, images, fitted, tmp_path):
    norm = fitted(method)
    path = norm.save(tmp_path / f"{method}.json")
    expected = norm.transform(images["source"])
    cls = NORMALIZERS[method]
    blank = get_normalizer(method)
    for loaded in (
        cls.load(path),
        blank.load(path),
        StainNormalizer.load(path),
        load(path),
        load_normalizer(path),
    ):
        assert type(loaded) is cls and loaded.target_name == norm.target_name
        np.testing.assert_array_equal(loaded.transform(images["source"]), expected)
    assert not blank.is_fitted  # load returns a new normalizer
    assert cls.load(path, tile_size=256).tile_size == 256
    for other in sorted(set(METHODS) - {method}):
        with pytest.raises(ParameterError) as err:
            NORMALIZERS[other].load(path)
        msg = str(err.value)
        assert msg.startswith(str(path)) and "\n" not in msg
        assert f"is for method {method!r}, not {other!r}" in msg


def test_preset_errors_name_the_file(fitted, tmp_path):
    path = fitted("reinhard").save(tmp_path / "reinhard.json")
    with pytest.raises(ParameterError, match="reinhard.json.*'reinhard', not 'macenko'"):
        load_normalizer(path, method="macenko")
    with pytest.raises(ParameterError, match="reinhard.json"):
        fit_target("macenko", path)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "napari-stainfuser stain preset", "method": ')
    with pytest.raises(ParameterError, match="corrupt.json: corrupt stain preset") as err:
        load_normalizer(corrupt)
    assert "\n" not in str(err.value)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ParameterError, match="other.json: not a stain preset"):
        load_normalizer(other)
    data = json.loads(path.read_text())
    data["version"] = 99
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(data))
    with pytest.raises(ParameterError, match="newer.json.*version 99"):
        load_normalizer(newer)
    data["version"], data["target"]["mean"] = 1, [1.0, "x", 2.0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ParameterError, match="bad.json"):
        load_normalizer(bad)
    with pytest.raises(ParameterError, match="missing.json: no such stain preset"):
        load_normalizer(tmp_path / "missing.json")
    # Wrong JSON types where a name or a number belongs.
    data = json.loads(path.read_text())
    for key, value, problem in [
        ("method", ["reinhard"], "method \\['reinhard'\\] is unknown"),
        ("method", {}, "method \\{\\} is unknown"),
        ("params", {**data["params"], "seed": "x"}, "seed must be an integer"),
    ]:
        wrong = tmp_path / f"wrong-{key}.json"
        wrong.write_text(json.dumps({**data, key: value}))
        with pytest.raises(ParameterError, match=f"wrong-{key}.json: .*{problem}") as err:
            load_normalizer(wrong)
        assert "\n" not in str(err.value)


def test_fit_target_from_picture_paths(images, tmp_path):
    # torchstain-target.png is RGBA: the alpha channel is dropped.
    norm = fit_target("macenko", DATA / "he" / "torchstain-target.png")
    ref = get_normalizer("macenko").fit(images["target"])
    for k in ref.target_state:
        assert torch.equal(norm.target_state[k], ref.target_state[k])
    not_image = tmp_path / "notes.png"
    not_image.write_text("these are not pixels")
    with pytest.raises(ParameterError, match="notes.png: not an image") as err:
        fit_target("macenko", not_image)
    assert "\n" not in str(err.value)
    with pytest.raises(ParameterError, match="nothing.jpg: no such file"):
        fit_target("macenko", tmp_path / "nothing.jpg")


def test_fit_on_a_slide_and_background_tile_with_slide_statistics():
    slide = open_slide(DATA / "CMU-1-Small-Region.svs")
    norm = get_normalizer("macenko").fit(read_rgb("he/torchstain-target.png"))
    norm.fit_source(slide)
    assert norm.source_name == f"slide {slide.path}"
    # A glass tile of the slide (right of the tissue) passes essentially unchanged.
    glass = np.asarray(slide.levels[0][200:456, 1800:2056])
    out = norm.transform(glass)
    from napari_stainfuser.stain.lab import delta_e2000_rgb

    assert float(delta_e2000_rgb(out, glass).mean()) < 2.0
    # fit_target on a slide path samples the slide's tissue the same way.
    via_path = fit_target("macenko", DATA / "CMU-1-Small-Region.svs")
    for k in via_path.target_state:
        assert torch.allclose(via_path.target_state[k], norm.source_state[k])


def test_too_little_tissue_names_the_image(images):
    with pytest.raises(StainEstimationError, match="^almost blank: too little tissue"):
        get_normalizer("macenko").fit(np.full((300, 300, 3), 250, np.uint8), name="almost blank")
    with pytest.raises(StainEstimationError, match="^target image: too little tissue"):
        get_normalizer("vahadane").fit(images["source"][:10, :10])


def test_fit_on_a_list_pools_the_images(images):
    # Reinhard's statistics are moments: the same image twice gives the same moments.
    one = get_normalizer("reinhard").fit(images["target"]).target_state
    two = get_normalizer("reinhard").fit([images["target"], images["target"]]).target_state
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-9)
    mixed = get_normalizer("reinhard").fit([images["target"], images["source"]]).target_state
    src = get_normalizer("reinhard").fit(images["source"]).target_state
    lo, hi = torch.minimum(one["mean"], src["mean"]), torch.maximum(one["mean"], src["mean"])
    assert torch.all((mixed["mean"] >= lo) & (mixed["mean"] <= hi))
