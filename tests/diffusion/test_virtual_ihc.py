"""The virtual-IHC model: shapes, the shared encoder, checkpoints, sampling and uncertainty."""

import json

import numpy as np
import pytest
import torch

from napari_stainfuser.diffusion.ihc_networks import BRANCHES, build, preset
from napari_stainfuser.diffusion.virtual_ihc import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    VirtualIHC,
    dab_density_torch,
    load_networks,
    save_checkpoint,
)
from napari_stainfuser.errors import CheckpointError, ParameterError


def _batch(markers: int, b: int = 2, s: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    he = torch.rand((b, 3, s, s), generator=g) * 2 - 1
    noisy = {
        "ihc": torch.randn((b, 3, s, s), generator=g),
        "mask": torch.randn((b, 1, s, s), generator=g),
    }
    t = torch.randint(0, 1000, (b,), generator=g)
    m = torch.arange(b) % markers
    return he, noisy, t, m


@pytest.mark.parametrize("markers", [("CD3",), ("CD3", "CK8/18", "Ki67")])
def test_forward_and_backward_shapes_for_one_and_three_markers(markers):
    net = build(preset("tiny", markers))
    he, noisy, t, m = _batch(len(markers))
    out = net(he, noisy, t, m)
    assert out["ihc"].shape == (2, 3, 64, 64)
    assert out["mask"].shape == (2, 1, 64, 64)
    # Each branch's loss reaches the shared encoder on its own: it is shared.
    for name in BRANCHES:
        net.zero_grad()
        out = net(he, noisy, t, m)
        out[name].square().mean().backward()
        enc = net.encoder.conv_in.weight.grad
        assert enc is not None and float(enc.abs().sum()) > 0
        other = next(n for n in BRANCHES if n != name)
        assert all(p.grad is None for p in net.branch(other).parameters())
    # The marker embedding changes the prediction.
    if len(markers) > 1:
        with torch.no_grad():
            a = net(he, noisy, t, torch.zeros(2, dtype=torch.long))["mask"]
            b = net(he, noisy, t, torch.ones(2, dtype=torch.long))["mask"]
        assert float((a - b).abs().max()) > 1e-4


def test_tiles_must_be_a_multiple_of_32():
    net = build(preset("tiny", ["CD3"]))
    he, noisy, t, m = _batch(1, s=64)
    with pytest.raises(ParameterError, match="multiple of 32"):
        net(he[..., :48, :48], {k: v[..., :48, :48] for k, v in noisy.items()}, t, m)


def test_dab_density_matches_skimage_rgb2hed():
    from skimage.color import rgb2hed

    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    ours = dab_density_torch(torch.from_numpy(rgb).permute(2, 0, 1)[None].double() / 255)[0]
    ref = np.clip(rgb2hed(rgb)[..., 2], 0, None)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)


@pytest.fixture()
def checkpoint(tmp_path):
    net = build(preset("tiny", ["CD3", "CK8/18"], tile=64, mpp=1.0), seed=3)
    return save_checkpoint(net, tmp_path / "ckpt", {"training": {"steps": 0}}), net


def test_checkpoint_round_trip_is_exact_and_records_what_it_is(checkpoint):
    folder, net = checkpoint
    record = json.loads((folder / CONFIG_NAME).read_text())
    assert record["markers"] == ["CD3", "CK8/18"]
    assert record["mpp"] == 1.0 and record["tile"] == 64
    assert record["architecture"]["name"] == "tiny"
    assert record["training"] == {"steps": 0}
    loaded, _ = load_networks(folder)
    for (k, a), (k2, b) in zip(net.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)


def test_loading_is_strict(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _ = checkpoint
    state = load_file(str(folder / WEIGHTS_NAME))
    dropped = next(iter(state))
    del state[dropped]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(folder / WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match="1 missing keys .*1 unexpected keys") as e:
        load_networks(folder)
    assert dropped in str(e.value) and "\n" not in str(e.value)


def test_a_config_whose_architecture_differs_is_refused(checkpoint):
    folder, _ = checkpoint
    record = json.loads((folder / CONFIG_NAME).read_text())
    record["architecture"]["context_dim"] = 32
    (folder / CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_networks(folder)


def test_an_unknown_marker_lists_the_known_ones(checkpoint):
    folder, _ = checkpoint
    with pytest.raises(ParameterError, match="PD-L1.*known markers: CD3, CK8/18"):
        VirtualIHC.load(folder, marker="PD-L1")
    # Markers match without regard to case.
    assert VirtualIHC.load(folder, marker="ck8/18").marker == "CK8/18"


def test_a_checkpoint_with_several_markers_needs_one_chosen(checkpoint):
    folder, _ = checkpoint
    with pytest.raises(ParameterError, match="choose one of CD3, CK8/18"):
        VirtualIHC.load(folder)


def _tiles(seed=0, s=64, b=2):
    from napari_stainfuser.slide.synthetic import SyntheticTissue

    he = np.asarray(SyntheticTissue(seed, 1.0).render_he((s, s * b)))
    return (
        torch.from_numpy(he).permute(2, 0, 1).reshape(3, s, b, s).permute(2, 0, 1, 3).contiguous()
    )


@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_sampling_is_a_function_of_the_noise(checkpoint, sampler):
    folder, _ = checkpoint
    model = VirtualIHC.load(folder, marker="CD3", steps=3, sampler=sampler)
    tiles = _tiles()
    g = torch.Generator().manual_seed(5)
    noise = torch.randn((2, 4, 64, 64), generator=g)
    a, b = model.stain(tiles, noise), model.stain(tiles, noise)
    assert a.tiles.shape == (2, 3, 64, 64) and a.tiles.dtype == torch.uint8
    assert a.extras["mask"].shape == (2, 1, 64, 64)
    assert torch.equal(a.tiles, b.tiles) and torch.equal(a.extras["mask"], b.extras["mask"])
    c = model.stain(tiles, torch.randn((2, 4, 64, 64), generator=g))
    assert not torch.equal(a.tiles, c.tiles)
    assert set(a.extras) == {"mask"}  # one sample: no spread to report


def test_uncertainty_is_the_spread_of_the_samples(checkpoint):
    folder, _ = checkpoint
    model = VirtualIHC.load(folder, marker="CD3", steps=2, samples=3)
    assert model.spec.latent_channels == 12
    assert [e.name for e in model.spec.extras] == ["mask", "uncertainty", "mask_uncertainty"]
    tiles = _tiles(b=1)
    one = torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(1))
    same = model.stain(tiles, one.repeat(1, 3, 1, 1))
    # Three copies of one noise draw are three identical samples: no spread.
    assert float(same.extras["uncertainty"].abs().max()) == 0.0
    assert float(same.extras["mask_uncertainty"].abs().max()) == 0.0
    # And their mean is that one sample.
    single = VirtualIHC.load(folder, marker="CD3", steps=2).stain(tiles, one)
    assert int((same.tiles.int() - single.tiles.int()).abs().max()) <= 1
    differ = model.stain(
        tiles, torch.randn((1, 12, 64, 64), generator=torch.Generator().manual_seed(2))
    )
    assert float(differ.extras["uncertainty"].mean()) > 0
    assert float(differ.extras["mask_uncertainty"].mean()) > 0


def test_bad_options_are_one_line_errors(checkpoint):
    folder, _ = checkpoint
    with pytest.raises(ParameterError, match="sampler.*pndm.*valid: ddim, dpm\\+\\+"):
        VirtualIHC.load(folder, marker="CD3", sampler="pndm")
    with pytest.raises(ParameterError, match="samples: must be in 1..64"):
        VirtualIHC.load(folder, marker="CD3", samples=0)
    with pytest.raises(CheckpointError, match="not a virtual-IHC checkpoint"):
        VirtualIHC.load(folder.parent)
