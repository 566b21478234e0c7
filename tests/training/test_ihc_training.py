"""Training virtual IHC: the pair folder, the joint loss, checkpoints and exact resume."""

import numpy as np
import pytest
import torch

from napari_stainfuser.errors import ParameterError
from napari_stainfuser.training.ihc_data import (
    PairDataset,
    find_pairs,
    read_mask,
    write_synthetic_pairs,
)
from napari_stainfuser.training.ihc_trainer import (
    IHCTrainConfig,
    read_loss_log,
    train_virtual_ihc,
)
from napari_stainfuser.training.tileio import read_rgb, write_png


@pytest.fixture(scope="module")
def synthetic_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    names = write_synthetic_pairs(root, 16, tile=64, marker="CD3", seed=1)
    return root, names


def test_synthetic_pairs_are_aligned_and_carry_the_true_mask(synthetic_pairs):
    from napari_stainfuser.slide.synthetic import SyntheticTissue

    root, names = synthetic_pairs
    pairs = find_pairs(root, "CD3")
    assert [p.name for p in pairs] == sorted(names)
    p = pairs[0]
    y, x = (int(v[1:]) for v in p.name.split("-")[1:])
    t = SyntheticTissue(1, 1.0)
    _, truth = t.render_ihc((64, 64), "CD3", chunks=64, origin=(y, x))
    np.testing.assert_array_equal(read_mask(p.mask), np.asarray(truth))
    np.testing.assert_array_equal(read_rgb(p.he), np.asarray(t.render_he((64, 64), origin=(y, x))))
    # The marker-positive cells are brown in the IHC: DAB is higher inside the mask.
    from napari_stainfuser.training.coarse_mask import dab_density

    dab = np.concatenate([dab_density(read_rgb(q.ihc))[read_mask(q.mask)] for q in pairs])
    out = np.concatenate([dab_density(read_rgb(q.ihc))[~read_mask(q.mask)] for q in pairs])
    assert dab.mean() > 3 * out.mean()


def test_augmentation_moves_he_ihc_and_mask_together(synthetic_pairs):
    root, _ = synthetic_pairs
    pairs = find_pairs(root, "CD3")
    plain = PairDataset(pairs, ["CD3"], 64, augment=False)
    aug = PairDataset(pairs, ["CD3"], 64, augment=True)
    for seed in range(8):
        a, b = plain[(0, seed)], aug[(0, seed)]
        # Find the rotation/flip that maps the plain IHC onto the augmented one;
        # the same one must map the mask (and the H&E up to the jitter).
        found = None
        for k in range(4):
            for flip in (False, True):
                m = torch.rot90(a["ihc"], k, (1, 2))
                m = m.flip(2) if flip else m
                if torch.equal(m, b["ihc"]):
                    found = (k, flip)
        assert found is not None
        k, flip = found
        mask = torch.rot90(a["mask"], k, (1, 2))
        he = torch.rot90(a["he"], k, (1, 2)).float()
        mask, he = (mask.flip(2), he.flip(2)) if flip else (mask, he)
        assert torch.equal(mask, b["mask"])
        assert float((he - b["he"].float()).abs().mean()) < 12  # a mild colour jitter only


def test_unmatched_names_are_listed(tmp_path):
    img = np.full((64, 64, 3), 200, np.uint8)
    for name in ("a", "b", "c"):
        write_png(tmp_path / "he" / f"{name}.png", img)
    for name in ("a", "d"):
        write_png(tmp_path / "ihc" / f"{name}.png", img)
    with pytest.raises(ParameterError) as e:
        find_pairs(tmp_path, "CD3")
    msg = str(e.value)
    assert "unmatched names" in msg and "he/ without ihc/: b, c" in msg
    assert "ihc/ without he/: d" in msg and "\n" not in msg


def test_pairs_of_different_sizes_are_refused(tmp_path):
    write_png(tmp_path / "he" / "a.png", np.full((64, 64, 3), 200, np.uint8))
    write_png(tmp_path / "ihc" / "a.png", np.full((64, 96, 3), 200, np.uint8))
    with pytest.raises(ParameterError, match="a: he is 64×64 px but ihc/a.png is 96×64 px"):
        find_pairs(tmp_path, "CD3")


def test_a_missing_folder_says_what_the_layout_is(tmp_path):
    (tmp_path / "he").mkdir()
    with pytest.raises(ParameterError, match="no ihc/ folder"):
        find_pairs(tmp_path, "CD3")


def _config(root, out, steps, **kw):
    settings = {"batch_size": 4, "tile": 64, "checkpoint_every": 2, **kw}
    return IHCTrainConfig(
        pairs=[str(root)], markers=["CD3"], out=str(out), steps=steps, progress=False,
        device="cpu", **settings,
    )  # fmt: skip


def test_resume_is_bit_exact_on_cpu(synthetic_pairs, tmp_path):
    from napari_stainfuser.diffusion.virtual_ihc import load_networks

    root, _ = synthetic_pairs
    whole = train_virtual_ihc(_config(root, tmp_path / "whole", 4))
    first = _config(root, tmp_path / "split", 2)
    train_virtual_ihc(first)
    resumed = train_virtual_ihc(_config(root, tmp_path / "split", 4, resume=True))
    a, record_a = load_networks(whole)
    b, record_b = load_networks(resumed)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), k
    la, lb = read_loss_log(tmp_path / "whole"), read_loss_log(tmp_path / "split")
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    # The checkpoint records its steps and the losses that led to it, the same after a
    # resume (they are read back from loss.csv).
    losses = record_a["training"]["losses"]
    assert record_a["training"]["steps"] == 4 and losses["steps"] == [1, 4]
    assert losses["mask_loss"] == pytest.approx(np.mean([r["mask_loss"] for r in la]))
    assert record_b["training"]["losses"] == losses


def test_a_run_folder_is_not_overwritten_and_resume_checks_settings(synthetic_pairs, tmp_path):
    root, _ = synthetic_pairs
    train_virtual_ihc(_config(root, tmp_path / "run", 1, checkpoint_every=1))
    with pytest.raises(ParameterError, match="already holds a training run"):
        train_virtual_ihc(_config(root, tmp_path / "run", 2))
    with pytest.raises(ParameterError, match="cannot resume with different settings.*lr"):
        train_virtual_ihc(_config(root, tmp_path / "run", 2, resume=True, lr=1e-4))


def test_bad_training_settings(synthetic_pairs, tmp_path):
    root, _ = synthetic_pairs
    with pytest.raises(ParameterError, match="tile 48: must be at least 64"):
        train_virtual_ihc(_config(root, tmp_path / "r", 1, tile=48))
    cfg = _config(root, tmp_path / "r", 1)
    cfg.markers = ["CD3", "CK8/18"]
    with pytest.raises(ParameterError, match="one marker per"):
        train_virtual_ihc(cfg)
    assert not (tmp_path / "r").exists()  # a refused start leaves nothing behind
