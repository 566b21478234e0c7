import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # These tests run tiny networks on a shared 2-core machine: one thread
    # avoids oversubscription, which costs far more than it gains here.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Indices of the 16 convolutions in torchvision's vgg19().features (configuration "E").
_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


def torchvision_style_state_dict(seed=0, widths=(4, 8, 8, 16, 16)) -> dict:
    """A random reduced-width VGG19 state dict with torchvision's key names,
    built without our VGG19 class (no real weights are available here)."""
    gen = torch.Generator().manual_seed(seed)
    sd, c_in, k = {}, 3, 0
    for width, n in zip(widths, (2, 2, 4, 4, 4), strict=True):
        for _ in range(n):
            idx = _CONV_INDICES[k]
            std = (2.0 / (9 * c_in)) ** 0.5
            sd[f"features.{idx}.weight"] = torch.randn(width, c_in, 3, 3, generator=gen) * std
            sd[f"features.{idx}.bias"] = torch.randn(width, generator=gen) * 0.01
            c_in, k = width, k + 1
    # torchvision files also hold the classifier; style transfer ignores it.
    sd["classifier.0.weight"] = torch.randn(32, c_in * 49, generator=gen)
    sd["classifier.0.bias"] = torch.zeros(32)
    sd["classifier.6.weight"] = torch.randn(10, 32, generator=gen)
    sd["classifier.6.bias"] = torch.zeros(10)
    return sd


@pytest.fixture
def vgg_state_dict():
    return torchvision_style_state_dict()


@pytest.fixture
def vgg_file(tmp_path):
    """The random VGG19 saved under torchvision's file name."""
    from napari_stainfuser.training.vgg import VGG19_FILENAME

    path = tmp_path / VGG19_FILENAME
    torch.save(torchvision_style_state_dict(), path)
    return path
