"""`mst.datasets.morphology_domains`: the synthetic section whose domains D3/D4 differ only in the image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import morphst as mst


@pytest.fixture(scope="module")
def sdata():
    return mst.datasets.morphology_domains(18, 18, random_state=1, um_per_px=2.5)


def test_layout_and_truth(sdata):
    a = sdata.tables["table"]
    assert a.n_obs == 18 * 18
    assert a.n_vars == 200
    assert list(a.obs["truth"].cat.categories) == ["D0", "D1", "D2", "D3", "D4"]
    assert set(a.obs["truth"]) == {"D0", "D1", "D2", "D3", "D4"}
    # D3 and D4 share expression programme P3; the others have their own
    prog = a.obs.groupby("truth", observed=True)["expression_programme"].agg(lambda s: set(s.astype(str)))
    assert prog.to_dict() == {"D0": {"P0"}, "D1": {"P1"}, "D2": {"P2"}, "D3": {"P3"}, "D4": {"P3"}}
    # hexagonal grid 100 µm apart: nearest neighbour at 100 µm = 40 px at 2.5 µm/px
    from scipy.spatial import cKDTree

    d, _ = cKDTree(a.obsm["spatial"]).query(a.obsm["spatial"], k=2)
    np.testing.assert_allclose(d[:, 1], 40.0, rtol=1e-9)
    img = sdata.images["he"]
    assert img.dtype == np.uint8
    assert img.shape[0] == 3
    # every spot lies inside the image
    h, w = img.shape[1:]
    assert (a.obsm["spatial"][:, 0] < w).all()
    assert (a.obsm["spatial"][:, 1] < h).all()


def test_expression_truth(sdata):
    a = sdata.tables["table"]
    x = np.asarray(a.X.todense())
    logx = np.log1p(x / x.sum(1, keepdims=True) * 1e4)
    truth = a.obs["truth"].astype(str).to_numpy()

    def score(genes):
        return logx[:, genes].mean(1)

    p3 = score(slice(45, 60))
    # D3 vs D4: the same programme (no difference beyond noise); D3 vs D0: a clear one
    assert stats.mannwhitneyu(p3[truth == "D3"], p3[truth == "D4"]).pvalue > 0.01
    assert p3[truth == "D3"].mean() - p3[truth == "D0"].mean() > 0.5
    for d, genes in (("D0", slice(0, 15)), ("D1", slice(15, 30)), ("D2", slice(30, 45))):
        s = score(genes)
        assert s[truth == d].mean() - s[truth != d].mean() > 0.5
    # the gradient genes follow obs['gradient']
    assert stats.spearmanr(score(slice(60, 80)), a.obs["gradient"]).statistic > 0.5
    # background genes only move together (their share shrinks as the gradient genes rise): their balance does not
    balance = score(slice(100, 150)) - score(slice(150, 200))
    assert abs(stats.spearmanr(balance, a.obs["gradient"]).statistic) < 0.3


def test_image_truth(sdata):
    """D3 and D4 differ in the image: texture (co-occurrence contrast at 1 px) and eosin."""
    mst.settings.progress_bar = False
    mst.pp.extract_patches(sdata, patch_size=80.0, target_px=32)
    mst.tl.embed_patches(sdata, model="handcrafted")
    from morphst.tl.models._handcrafted import feature_names

    a = sdata.tables["table"]
    f = a.obsm["X_handcrafted"]
    names = list(feature_names())
    truth = a.obs["truth"].astype(str).to_numpy()
    d3, d4 = truth == "D3", truth == "D4"
    homog = f[:, next(i for i, n in enumerate(names) if "homogeneity" in n)]
    # coarse 8 µm grain (D4) is more homogeneous at 1 px than the fine 2 µm grain (D3)
    assert homog[d4].mean() > homog[d3].mean()
    assert stats.mannwhitneyu(homog[d3], homog[d4]).pvalue < 1e-4
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    zs = (f - f.mean(0)) / (f.std(0) + 1e-9)
    acc = cross_val_score(LogisticRegression(max_iter=2000), zs[d3 | d4], truth[d3 | d4], cv=3).mean()
    assert acc > 0.9


def test_seeded_and_checked():
    a = mst.datasets.morphology_domains(6, 7, random_state=3, um_per_px=4.0)
    b = mst.datasets.morphology_domains(6, 7, random_state=3, um_per_px=4.0)
    c = mst.datasets.morphology_domains(6, 7, random_state=4, um_per_px=4.0)
    ta, tb, tc = (s.tables["table"] for s in (a, b, c))
    assert (ta.X != tb.X).nnz == 0
    np.testing.assert_array_equal(a.images["he"].values, b.images["he"].values)
    assert (ta.X != tc.X).nnz > 0
    with pytest.raises(ValueError, match="n_genes"):
        mst.datasets.morphology_domains(n_genes=50)
    with pytest.raises(ValueError, match="um_per_px"):
        mst.datasets.morphology_domains(um_per_px=0)


def _brightness_at_spots(sdata) -> np.ndarray:
    """Mean RGB of a 5 × 5 px window at each spot centre."""
    img = np.asarray(sdata.images["he"].values, dtype=float).mean(0)
    xy = np.round(sdata.tables["table"].obsm["spatial"]).astype(int)
    return np.array([img[y - 2 : y + 3, x - 2 : x + 3].mean() for x, y in xy])


def test_smooth_stain_field_sections_and_deep_features():
    s = mst.datasets.morphology_domains(
        10, 10, random_state=0, um_per_px=4.0, n_sections=3, section_stain=0.5, stain_field=0.6, deep_features=300
    )
    a = s.tables["table"]
    sec = a.obs["section"].astype(str).to_numpy()
    assert a.obs["section"].value_counts().to_dict() == {"S0": 100, "S1": 100, "S2": 100}
    # sections side by side: disjoint x ranges
    x = a.obsm["spatial"][:, 0]
    assert x[sec == "S0"].max() < x[sec == "S1"].min()
    assert x[sec == "S1"].max() < x[sec == "S2"].min()
    # the stain field is smooth (hundreds of µm): neighbouring spots 100 µm apart agree
    from scipy.spatial import cKDTree

    f = a.obs["stain_field"].to_numpy()
    _, nn = cKDTree(a.obsm["spatial"]).query(a.obsm["spatial"], k=2)
    assert np.corrcoef(f, f[nn[:, 1]])[0, 1] > 0.8
    # more stain, darker image: within each section brightness falls with the field
    bright = _brightness_at_spots(s)
    for name in ("S0", "S1", "S2"):
        assert stats.spearmanr(f[sec == name], bright[sec == name]).statistic < -0.3
    # section offsets: the section with the largest haematoxylin+eosin offset is the darkest
    off = a.uns["morphst_dataset"]["section_stain_offsets"].sum(1)
    means = [bright[sec == f"S{i}"].mean() for i in range(3)]
    assert int(np.argmax(off)) == int(np.argmin(means))
    # deep-feature-like embedding: more features than spots per section, carrying the image-only truth
    deep = a.obsm["X_deep"]
    assert deep.shape == (300, 300)
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict

    pred = cross_val_predict(RidgeCV(alphas=np.logspace(-1, 4, 12)), deep, f, cv=5)
    assert np.corrcoef(pred, f)[0, 1] > 0.7
    again = mst.datasets.morphology_domains(
        10, 10, random_state=0, um_per_px=4.0, n_sections=3, section_stain=0.5, stain_field=0.6, deep_features=300
    )
    np.testing.assert_array_equal(again.tables["table"].obsm["X_deep"], deep)
    with pytest.raises(ValueError, match="stain_field"):
        mst.datasets.morphology_domains(6, 6, stain_field=-1.0)
    with pytest.raises(ValueError, match="deep_features"):
        mst.datasets.morphology_domains(6, 6, deep_features=0)


def test_nonlinear_shared_channel():
    """Eosin rises with g² (both edges), not with g: no linear correlation with the gradient genes' driver."""
    kw = dict(random_state=2, um_per_px=4.0, stain_field=0.0, stain_noise=0.0, gradient_stain=0.0, gradient_density=0.0)
    on = mst.datasets.morphology_domains(12, 12, nonlinear_shared=1.0, **kw)
    off = mst.datasets.morphology_domains(12, 12, nonlinear_shared=0.0, **kw)
    g = on.tables["table"].obs["gradient"].to_numpy()
    diff = _brightness_at_spots(off) - _brightness_at_spots(on)  # the same draws: only the channel differs
    assert stats.spearmanr(diff, g**2).statistic > 0.7
    assert abs(stats.spearmanr(diff, g).statistic) < 0.3
