"""VGG19 in plain torch with torchvision-format weights, and neural style transfer.

No real VGG19 weights are available here, so a randomly initialised VGG19 of
reduced width is saved in torchvision's state-dict layout (features.N.*,
classifier.N.*) and loaded from that file.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_stainfuser.errors import CheckpointError, ParameterError
from napari_stainfuser.training.nst import NSTConfig, gram, style_transfer
from napari_stainfuser.training.vgg import (
    LAYER_INDEX,
    VGG19,
    VGG19_ENV,
    VGG19_FILENAME,
    find_vgg19_weights,
    load_vgg19,
)

# Indices of the 16 convolutions in torchvision's vgg19().features (configuration "E").
TORCHVISION_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
TORCHVISION_POOL_INDICES = [4, 9, 18, 27, 36]


def test_layer_names_follow_torchvision_indices():
    convs = sorted(i for name, i in LAYER_INDEX.items() if name.startswith("conv"))
    pools = sorted(i for name, i in LAYER_INDEX.items() if name.startswith("pool"))
    assert convs == TORCHVISION_CONV_INDICES and pools == TORCHVISION_POOL_INDICES
    assert LAYER_INDEX["conv4_2"] == 21 and LAYER_INDEX["relu5_1"] == 29
    assert len(VGG19().features) == 37  # torchvision's vgg19().features has 37 entries


def test_load_maps_torchvision_keys_strictly(vgg_file):
    sd = torch.load(vgg_file, weights_only=True)
    vgg = load_vgg19(vgg_file)
    assert vgg.widths == (4, 8, 8, 16, 16)
    for idx in TORCHVISION_CONV_INDICES:
        assert torch.equal(vgg.features[idx].weight, sd[f"features.{idx}.weight"])
        assert torch.equal(vgg.features[idx].bias, sd[f"features.{idx}.bias"])
    assert not any(p.requires_grad for p in vgg.parameters())


def test_features_match_a_direct_computation(vgg_file):
    """relu1_2 and relu2_1 computed by hand from the file's tensors."""
    sd = torch.load(vgg_file, weights_only=True)
    vgg = load_vgg19(vgg_file)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def conv(h, i):
        return F.relu(F.conv2d(h, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1))

    h = (x - mean) / std
    r11 = conv(h, 0)
    r12 = conv(r11, 2)
    r21 = conv(F.max_pool2d(r12, 2), 5)
    got = vgg(x, ["relu1_2", "relu2_1", "conv1_1"])
    torch.testing.assert_close(got["relu1_2"], r12)
    torch.testing.assert_close(got["relu2_1"], r21)
    torch.testing.assert_close(F.relu(got["conv1_1"]), r11)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("features.34.bias"), "missing keys.*features.34.bias"),
        (lambda sd: sd.update({"features.1.weight": torch.zeros(1)}), "unexpected.*features.1"),
        (lambda sd: sd.update({"features.2.weight": torch.zeros(4, 4, 1, 1)}), "features.2.weight"),
        (lambda sd: sd.pop("features.0.weight"), "not a torchvision VGG19"),
    ],
)
def test_mismatching_files_are_refused(tmp_path, vgg_state_dict, edit, message):
    sd = vgg_state_dict
    edit(sd)
    path = tmp_path / "vgg.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=message):
        load_vgg19(path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(1), "x": ParameterError("not a tensor")}, path)
    with pytest.raises(CheckpointError, match="evil.pth") as err:
        load_vgg19(path)
    # One line naming the refused object, not torch's page of weights_only advice.
    assert "\n" not in str(err.value)
    assert "non-tensor object" in str(err.value)


def test_missing_weights_name_the_expected_file(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match=VGG19_FILENAME) as err:
        load_vgg19(tmp_path / "nowhere.pth")
    assert "\n" not in str(err.value)
    monkeypatch.delenv(VGG19_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(CheckpointError, match=f"{VGG19_FILENAME}.*--vgg-weights"):
        find_vgg19_weights()


def test_weights_found_through_the_environment(vgg_file, monkeypatch):
    monkeypatch.setenv(VGG19_ENV, str(vgg_file))
    assert find_vgg19_weights() == vgg_file


def _images(seed):
    gen = torch.Generator().manual_seed(seed)
    source = torch.rand(1, 3, 32, 32, generator=gen) * 0.5 + 0.25
    target = (
        torch.rand(1, 3, 32, 32, generator=gen) * 0.3
        + torch.tensor([0.7, 0.2, 0.5]).view(1, 3, 1, 1)
    ).clamp(0, 1)
    return source, target


def test_style_transfer_lowers_the_loss(vgg_file):
    """60 Adam steps on a random VGG19: the objective must fall below half its start.

    Measured: 6.30e6 -> 5.9e4 (a factor of about 100).
    """
    vgg = load_vgg19(vgg_file)
    source, target = _images(0)
    cfg = NSTConfig(iterations=60, lr=0.02)
    out, history = style_transfer(source, target, vgg, cfg)
    assert len(history) == 60
    assert history[-1] < 0.5 * history[0]
    assert out.shape == source.shape and out.min() >= 0 and out.max() <= 1
    # The style statistics moved towards the target's.
    feats = {k: gram(v) for k, v in vgg(torch.cat([source, out, target]), ["relu1_1"]).items()}
    g = feats["relu1_1"]
    assert (g[1] - g[2]).norm() < (g[0] - g[2]).norm()


def test_lbfgs_also_lowers_the_loss(vgg_file):
    """Measured: 6.37e6 -> 3.7e4 in one L-BFGS run (26 evaluations)."""
    vgg = load_vgg19(vgg_file)
    source, target = _images(1)
    _, history = style_transfer(source, target, vgg, NSTConfig(iterations=20, optimizer="lbfgs"))
    assert min(history) < 0.5 * history[0]


def test_without_style_the_source_is_the_optimum(vgg_file):
    vgg = load_vgg19(vgg_file)
    source, target = _images(2)
    out, history = style_transfer(source, target, vgg, NSTConfig(iterations=5, style_weight=0.0))
    assert history[0] == 0.0
    assert torch.equal(out, source)


def test_a_batch_equals_its_samples_run_alone(vgg_file):
    vgg = load_vgg19(vgg_file)
    s0, t0 = _images(3)
    s1, t1 = _images(4)
    cfg = NSTConfig(iterations=10, lr=0.02)
    both, _ = style_transfer(torch.cat([s0, s1]), torch.cat([t0, t1]), vgg, cfg)
    one, _ = style_transfer(s0, t0, vgg, cfg)
    two, _ = style_transfer(s1, t1, vgg, cfg)
    torch.testing.assert_close(both, torch.cat([one, two]), atol=1e-5, rtol=0)


def test_bad_nst_settings():
    with pytest.raises(ParameterError, match="relu9_9"):
        NSTConfig(style_layers=("relu9_9",)).validate()
    with pytest.raises(ParameterError, match="style_layer_weights"):
        NSTConfig(style_layer_weights=(1.0,)).validate()
    with pytest.raises(ParameterError, match="optimizer"):
        NSTConfig(optimizer="sgd").validate()


def test_gram_normalisation():
    f = torch.ones(1, 2, 3, 4)
    assert torch.allclose(gram(f), torch.full((1, 2, 2), 12.0 / 24.0))
    np.testing.assert_allclose(gram(torch.eye(2).view(1, 2, 1, 2)).numpy(), np.eye(2)[None] / 4)
