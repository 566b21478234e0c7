"""Our Macenko against torchstain's MacenkoNormalizer (torch backend) on real H&E.

Stated tolerance:
* stain vectors: within 1° of torchstain's on both images;
* the per-pixel transform, given torchstain's own statistics: within ±1 grey
  level (torchstain truncates, we round) on every pixel darker than Io in all
  channels; pixels with a channel at or above Io - 1 differ by design (we pass
  their excess brightness through as grey instead of through the stain model,
  so glass stays white) — on this pair, by at most ~12 grey levels.
* The end-to-end outputs differ more (mean ΔE2000 ≈ 7 on this pair) for one
  documented reason: we take the 99th-percentile concentrations over tissue
  pixels, torchstain over all pixels including glass (60 % of this source is
  brighter than Io in some channel), so its scale depends on how much glass
  a tile has.
"""

import numpy as np
import pytest
import torch

torchstain = pytest.importorskip("torchstain")

from napari_stainfuser.stain import get_normalizer  # noqa: E402


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)


def _angles(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.degrees(np.arccos(np.clip((a * b).sum(1), -1, 1)))


@pytest.fixture(scope="module")
def reference(images):
    ts = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    ts.fit(_chw(images["target"]))
    # torchstain keeps the source statistics private; read them the same way it does.
    he_src, _, maxc_src = ts._TorchMacenkoNormalizer__compute_matrices(
        _chw(images["source"]), 240, 1, 0.15
    )
    out = ts.normalize(_chw(images["source"]), stains=False)[0].numpy()
    return {
        "target": (ts.HERef.T.double(), ts.maxCRef.double()),
        "source": (he_src.T.double(), maxc_src.double()),
        "output": out,
    }


def test_stain_vectors_agree(images, reference):
    ours = get_normalizer("macenko")
    for key in ("target", "source"):
        state = ours._estimate(torch.from_numpy(images[key].reshape(-1, 3)), key)
        angles = _angles(state["stain_matrix"].numpy(), reference[key][0].numpy())
        assert np.all(angles < 1.0), (key, angles)


def test_transform_agrees_given_the_same_statistics(images, reference):
    norm = get_normalizer("macenko", lut=False)
    norm.target_state = dict(
        zip(("stain_matrix", "max_concentrations"), reference["target"], strict=True)
    )
    norm.source_state = dict(
        zip(("stain_matrix", "max_concentrations"), reference["source"], strict=True)
    )
    src = images["source"]
    out = norm.transform(src).astype(int)
    ref = np.clip(reference["output"], 0, 255)
    diff = np.abs(out - ref)
    below_io = (src < 239).all(axis=-1)
    assert below_io.mean() > 0.3
    assert diff[below_io].max() <= 1
    assert diff[~below_io].max() <= 16
