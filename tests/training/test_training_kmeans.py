"""k-means and target selection: distinct colour clusters must each get a representative."""

import numpy as np
import pytest
import torch
from scipy.cluster.vq import kmeans2

from napari_stainfuser.errors import ParameterError
from napari_stainfuser.slide.synthetic import MACENKO_REFERENCE_HE, SyntheticTissue
from napari_stainfuser.stain import RUIFROK_HE
from napari_stainfuser.training.kmeans import kmeans, pick_representatives
from napari_stainfuser.training.targets import colour_features, pick_targets


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 1.0], [0.0, 6.0, -2.0], [4.0, 4.0, 4.0]])
    labels = np.repeat(np.arange(4), 25)
    return centres[labels] + rng.normal(0, 0.3, (100, 3)), labels, centres


def test_kmeans_recovers_separated_clusters_like_scipy():
    x, truth, _ = _blobs()
    ours = kmeans(x, 4, seed=1)
    # Every true cluster maps to exactly one label and vice versa.
    pairs = {(int(t), int(o)) for t, o in zip(truth, ours.labels.numpy(), strict=True)}
    assert len(pairs) == 4
    # Independent implementation: scipy's k-means++ on the same data finds the same centroids.
    ref, _ = kmeans2(x, 4, minit="++", seed=3)
    d = np.linalg.norm(ours.centroids.numpy()[:, None] - ref[None], axis=2)
    assert np.all(d.min(axis=1) < 1e-6)
    inertia = ((x - ours.centroids.numpy()[ours.labels.numpy()]) ** 2).sum()
    assert ours.inertia == pytest.approx(inertia)


def test_kmeans_is_deterministic_per_seed():
    x, _, _ = _blobs(2)
    a, b = kmeans(x, 3, seed=7), kmeans(x, 3, seed=7)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)


def test_pick_representatives_one_per_cluster_nearest_the_centre():
    x, truth, centres = _blobs(4)
    picks = pick_representatives(x, 4, seed=0)
    assert sorted(truth[picks].tolist()) == [0, 1, 2, 3]
    for i in picks:
        members = x[truth == truth[i]]
        # the representative is the member closest to its cluster's mean
        dist = np.linalg.norm(members - members.mean(0), axis=1)
        assert np.linalg.norm(x[i] - members.mean(0)) == pytest.approx(dist.min())


def test_pick_representatives_with_duplicates_still_distinct():
    x = np.array([[0.0, 0.0]] * 5 + [[1.0, 1.0]] * 5)
    picks = pick_representatives(x, 3, seed=0)
    assert len(set(picks)) == 3


def test_kmeans_bad_k():
    with pytest.raises(ParameterError, match="k=5"):
        kmeans(np.zeros((3, 2)), 5)


def _stain_groups():
    """Synthetic tissue tiles in three stain styles (matrix, intensity), five windows each."""
    tissue = SyntheticTissue(seed=2)
    styles = [(RUIFROK_HE, 1.0), (MACENKO_REFERENCE_HE, 1.0), (MACENKO_REFERENCE_HE, 0.45)]
    tiles, groups = [], []
    for g, (matrix, scale) in enumerate(styles):
        for w in range(5):
            tile = tissue.render_he((64, 64), stain_matrix=matrix, scale=scale, origin=(0, 64 * w))
            tiles.append(np.asarray(tile))
            groups.append(g)
    return tiles, np.array(groups)


@pytest.mark.parametrize("kind", ["od", "stain"])
def test_pick_targets_covers_each_stain_style(kind):
    tiles, groups = _stain_groups()
    picks = pick_targets(tiles, 3, kind=kind, seed=0, min_tissue_pixels=200)
    assert sorted(groups[picks].tolist()) == [0, 1, 2]


def test_glass_tiles_are_not_candidates():
    tiles, _ = _stain_groups()
    glass = np.full((64, 64, 3), 240, np.uint8)
    feats, kept, seen = colour_features([glass, tiles[0], glass], "od", min_tissue_pixels=200)
    assert kept == [1] and seen == 3 and feats.shape == (1, 6)
    with pytest.raises(ParameterError, match="only 1 of 3 candidate tiles"):
        pick_targets([glass, tiles[0], glass], 2, min_tissue_pixels=200)
