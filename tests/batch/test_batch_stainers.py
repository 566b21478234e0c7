"""make_stainer, and stainers that travel to other processes unchanged."""

import pickle

import numpy as np
import pytest
import torch
from batch_cases import FAST, TARGET, tiny_stainfuser

from napari_stainfuser.errors import ParameterError
from napari_stainfuser.stainers import make_stainer, portable, stainer_identity


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ParameterError, match="macenko, reinhard, ruifrok, vahadane, stainfuser"):
        make_stainer("fancy", TARGET)


@pytest.mark.parametrize("method", ["macenko", "vahadane"])
def test_a_classical_stainer_rebuilt_in_another_process_is_identical(method, cmu_crop):
    norm = make_stainer(method, TARGET, slide=cmu_crop, **FAST)
    again = pickle.loads(pickle.dumps(portable(norm)))()
    tile = cmu_crop[256:512, 512:768]
    np.testing.assert_array_equal(again.transform(tile), norm.transform(tile))
    assert stainer_identity(again) == stainer_identity(norm)


def test_a_stain_preset_is_a_target(cmu_crop, tmp_path):
    norm = make_stainer("reinhard", TARGET, slide=cmu_crop, **FAST)
    preset = norm.save(tmp_path / "lab-b.json")
    from_preset = make_stainer("reinhard", preset, slide=cmu_crop, **FAST)
    tile = cmu_crop[256:512, 512:768]
    np.testing.assert_array_equal(from_preset.transform(tile), norm.transform(tile))


def test_identity_tells_targets_and_slides_apart(cmu_crop, synth):
    a = make_stainer("macenko", TARGET, slide=cmu_crop, **FAST)
    b = make_stainer("macenko", TARGET, slide=synth, **FAST)
    c = make_stainer("macenko", synth, slide=cmu_crop, **FAST)
    ia, ib, ic = (stainer_identity(x) for x in (a, b, c))
    assert ia["target"] == ib["target"] and ia["source"] != ib["source"]
    assert ia["target"] != ic["target"] and ia["source"] == ic["source"]


def test_stainfuser_travels_as_its_recipe_and_restains_identically(cmu_crop):
    sf = tiny_stainfuser(seed=2)
    recipe = pickle.loads(pickle.dumps(portable(sf)))
    assert recipe.method == "stainfuser" and recipe.weights.endswith("checkpoint.safetensors")
    again = recipe()
    tiles = torch.from_numpy(cmu_crop[:128, :256]).permute(2, 0, 1).reshape(3, 128, 2, 128)
    tiles = tiles.permute(2, 0, 1, 3).contiguous()
    noise = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        again.stain(tiles, noise).tiles, sf.stain(tiles, noise).tiles, rtol=0, atol=0
    )
    assert stainer_identity(again) == stainer_identity(sf)
    with pytest.raises(ParameterError, match="stain preset"):
        make_stainer("stainfuser", TARGET.with_suffix(".json"))
