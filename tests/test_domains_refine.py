"""mst.tl.domains(refine_neighs=k): the spatial majority vote, checked by hand on small grids."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import morphst as mst
from morphst.tl._integration._domains import refine_labels


def grid(n: int = 5) -> np.ndarray:
    return np.array([[i, j] for i in range(n) for j in range(n)], dtype=float)


def test_vote_by_hand_on_a_grid():
    xy = grid(5)  # position 5 * i + j at (i, j)
    lab = np.where(xy[:, 0] >= 3, "b", "a")
    lab[12] = "b"  # (2, 2): its 4 nearest (1,2) a, (3,2) b, (2,1) a, (2,3) a -> "a"
    out = refine_labels(lab, xy, None, 4)
    # (2, 1): (1,1) a, (3,1) b, (2,0) a, (2,2) b -> a 2:2 tie, its own label "a" stays; likewise (2, 3)
    # (3, 2): (2,2) b, (4,2) b, (3,1) b, (3,3) b -> "b"; every other spot already agrees with its neighbours
    expected = np.where(xy[:, 0] >= 3, "b", "a")
    np.testing.assert_array_equal(out, expected)
    assert out[12] == "a"


def test_tie_without_own_label_goes_to_the_nearest_holder():
    # a point at 0 labelled "c"; neighbours at 1 ("a") and 2 ("b"), k = 2: a 1:1 tie, "a" is nearer
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [-2.0, 0.0], [10.0, 0.0], [11.0, 0.0]])
    lab = np.array(["c", "a", "b", "a", "a"])
    out = refine_labels(lab, xy, None, 2)
    assert out[0] == "a"
    # point 1's two nearest: 0 ("c") at 1 and 2 ("b") at 3 -> tie of c and b, own "a" not tied: "c" is nearer
    assert out[1] == "c"


def test_votes_stay_within_a_section_and_k_is_capped():
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    lab = np.array(["a", "b", "b", "a", "a"])
    groups = np.array(["S1", "S1", "S1", "S2", "S2"])
    out = refine_labels(lab, xy, groups, 10)
    # S1: k capped at 2, point 0 sees b, b -> "b"; S2 (2 points) sees only its partner, "a"
    np.testing.assert_array_equal(out, ["b", "b", "b", "a", "a"])
    # without sections, point 3 (at the same place as 0) would count points 0, 1, 4 ...: here sections matter
    assert refine_labels(lab, xy, None, 1)[3] == "a"


def table(xy, x, sections=None):
    obs = pd.DataFrame(index=[f"s{i}" for i in range(len(xy))])
    if sections is not None:
        obs["section"] = pd.Categorical(sections)
    a = ad.AnnData(obs=obs)
    a.obsm["X_pca"], a.obsm["spatial"] = np.asarray(x, dtype=float), np.asarray(xy, dtype=float)
    return a


def test_domains_refine_removes_salt_and_pepper_noise_and_records_it():
    rng = np.random.default_rng(0)
    xy = grid(20)
    truth = (xy[:, 0] >= 10).astype(int)
    # 25 spots on a lattice 4 apart (no two adjacent) whose own expression says the other domain
    flip = np.flatnonzero((xy[:, 0] % 4 == 1) & (xy[:, 1] % 4 == 1))
    own = truth.copy()
    own[flip] = 1 - truth[flip]
    x = rng.normal(scale=0.3, size=(400, 2))
    x[:, 0] += 6.0 * own
    a = table(xy, x)
    mst.tl.domains(a, "X_pca", method="kmeans", n_domains=2, key_added="raw")
    mst.tl.domains(a, "X_pca", method="kmeans", n_domains=2, refine_neighs=8, key_added="ref")

    def agree(key):
        lab = a.obs[key].astype(int).to_numpy()
        return max(np.mean(lab == truth), np.mean(lab != truth))

    assert agree("raw") == pytest.approx(1 - 25 / 400)  # k-means follows each spot's own expression
    # each flipped spot's 8 nearest (distance 1 and sqrt 2) hold at most 3 of the other domain (those at x = 9
    # see column 10): the vote restores the truth, and changes nothing else
    assert agree("ref") == 1.0
    p = a.uns["ref"]["params"]
    assert p["refine_neighs"] == 8
    assert p["n_refined"] == 25
    assert a.uns["raw"]["params"]["refine_neighs"] == 0


def test_refine_bad_input_raises_and_writes_nothing():
    a = table(grid(4), np.random.default_rng(0).normal(size=(16, 2)))
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="refine_neighs"):
            mst.tl.domains(a, "X_pca", method="kmeans", n_domains=2, refine_neighs=bad)
    del a.obsm["spatial"]
    with pytest.raises(KeyError, match="spatial"):
        mst.tl.domains(a, "X_pca", method="kmeans", n_domains=2, refine_neighs=4)
    with pytest.raises(KeyError, match="nope"):
        a.obsm["spatial"] = grid(4)
        mst.tl.domains(a, "X_pca", method="kmeans", n_domains=2, refine_neighs=4, library_key="nope")
    assert "domain" not in a.obs and "domain" not in a.uns
