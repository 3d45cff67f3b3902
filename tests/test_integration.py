"""mst.tl.fuse, mst.tl.domains, mst.tl.evaluate_domains: real values on synthetic grids and HER2ST expression."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import morphst as mst


def grid_adata(n_side: int = 30, *, seed: int = 0, sections: int = 1) -> ad.AnnData:
    """A square grid (unit spacing) per section; genes: checkerboard, gradient, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n_side, 0:n_side]
    xy = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
    coords = np.vstack([xy] * sections)
    sec = np.repeat([f"S{i}" for i in range(sections)], len(xy))
    checker = ((coords[:, 0] + coords[:, 1]) % 2).astype(float)
    gradient = coords[:, 0] + coords[:, 1]
    noise = rng.normal(size=len(coords))
    x = np.column_stack([checker, gradient, noise]).astype(np.float32)
    obs = pd.DataFrame({"section": pd.Categorical(sec)}, index=[f"c{i}" for i in range(len(coords))])
    a = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=["checker", "gradient", "noise"]))
    a.obsm["spatial"] = coords
    return a


def morans_i(values: np.ndarray, w: sparse.csr_matrix) -> float:
    """Moran's I by its formula, row-normalised weights."""
    w = sparse.diags(1.0 / np.asarray(w.sum(axis=1)).ravel()) @ w
    z = values - values.mean()
    return float(len(z) / w.sum() * (z @ (w @ z)) / (z @ z))


def gearys_c(values: np.ndarray, w: sparse.csr_matrix) -> float:
    w = sparse.diags(1.0 / np.asarray(w.sum(axis=1)).ravel()) @ w
    w = w.tocoo()
    z = values - values.mean()
    num = (len(z) - 1) * np.sum(w.data * (values[w.row] - values[w.col]) ** 2)
    return float(num / (2 * w.sum() * (z @ z)))


def snapshot(a: ad.AnnData) -> tuple:
    return (sorted(a.obs.columns), sorted(a.obsm.keys()), sorted(a.obsp.keys()), sorted(a.uns.keys()))


def three_regions(n_side: int = 24, seed: int = 0) -> tuple[ad.AnnData, np.ndarray]:
    """Truth: left half, right-top, right-bottom. Expression separates left/right only; morphology marks right-bottom."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n_side, 0:n_side]
    x, y = xx.ravel(), yy.ravel()
    truth = np.where(x < n_side // 2, 0, np.where(y < n_side // 2, 1, 2))
    n = truth.size
    expr = rng.normal(size=(n, 20))
    expr[:, :3] += 3.0 * (truth > 0)[:, None]  # left vs right only
    morph = rng.normal(size=(n, 64))
    morph[:, :4] += 3.0 * (truth == 2)[:, None]  # right-bottom only
    a = ad.AnnData(obs=pd.DataFrame({"truth": pd.Categorical(truth.astype(str))}, index=[f"s{i}" for i in range(n)]))
    a.obsm["X_pca"] = expr
    a.obsm["X_morph"] = morph
    a.obsm["spatial"] = np.column_stack([x, y]).astype(float) * 100.0
    return a, truth


# ---------------------------------------------------------------- evaluate_domains


def test_ari_nmi_equal_sklearn_and_nan_reference_excluded():
    a = grid_adata(12)
    rng = np.random.default_rng(1)
    dom = rng.integers(0, 4, a.n_obs)
    ref = np.where(a.obsm["spatial"][:, 0] < 6, "A", "B").astype(object)
    ref[rng.choice(a.n_obs, 9, replace=False)] = np.nan
    dom[: a.n_obs // 2] = np.where(ref[: a.n_obs // 2] == "A", 0, 1)  # some agreement, so ARI is not ~0
    a.obs["domain"] = pd.Categorical(dom.astype(str))
    a.obs["cluster"] = pd.Categorical(ref)
    mst.tl.evaluate_domains(a, "domain", "cluster", genes=["checker", "gradient"])
    ev = a.uns["domain_evaluation"]
    ok = ~pd.isna(ref)
    assert ev["n_excluded"] == 9
    assert ev["n_evaluated"] == a.n_obs - 9
    assert ev["ari"] == pytest.approx(adjusted_rand_score(ref[ok].astype(str), dom[ok].astype(str)), abs=1e-12)
    assert ev["nmi"] == pytest.approx(normalized_mutual_info_score(ref[ok].astype(str), dom[ok].astype(str)), abs=1e-12)
    assert 0.05 < ev["ari"] < 0.95


def test_moran_geary_checkerboard_and_gradient():
    import squidpy as sq

    a = grid_adata(30)
    a.obs["domain"] = pd.Categorical(np.where(a.obsm["spatial"][:, 0] < 15, "0", "1"))
    mst.tl.evaluate_domains(a, annotation_key=None, genes=["checker", "gradient", "noise"], n_neighs=4)
    tab = a.uns["domain_evaluation"]["autocorr"]
    # checkerboard: rook neighbours all of the other colour -> strongly negative; gradient: near 1
    assert tab.loc["checker", "moran_I"] < -0.8
    assert tab.loc["gradient", "moran_I"] > 0.9
    assert abs(tab.loc["noise", "moran_I"]) < 0.1
    # scaled Geary's C agrees in sign
    assert tab.loc["checker", "geary_1mC"] < -0.8
    assert tab.loc["gradient", "geary_1mC"] > 0.9
    assert np.allclose(tab["geary_1mC"], 1 - tab["geary_C"])
    # and both equal the textbook formulas on the same squidpy graph
    b = a.copy()
    sq.gr.spatial_neighbors(b, coord_type="generic", n_neighs=4, library_key="section")
    w = b.obsp["spatial_connectivities"].tocsr()
    for g in ["checker", "gradient", "noise"]:
        v = b[:, g].X.ravel().astype(float)
        assert tab.loc[g, "moran_I"] == pytest.approx(morans_i(v, w), abs=1e-6)
        assert tab.loc[g, "geary_C"] == pytest.approx(gearys_c(v, w), abs=1e-6)
    assert "ari" not in a.uns["domain_evaluation"]


def test_markers_ranked_per_domain():
    a = grid_adata(16)
    # two domains split on x: the gradient gene is higher in the right domain, so it is a marker of it
    a.obs["domain"] = pd.Categorical(np.where(a.obsm["spatial"][:, 0] < 8, "0", "1"))
    a.obs["cluster"] = a.obs["domain"].copy()
    mst.tl.evaluate_domains(a, annotation_key="cluster", n_markers=1, normalize=False)
    ev = a.uns["domain_evaluation"]
    assert ev["ari"] == pytest.approx(1.0)
    assert ev["autocorr"].loc["gradient", "domain"] == "1"


# ---------------------------------------------------------------- fuse


def test_stitch_and_weighted_blocks():
    a, _ = three_regions()
    mst.tl.fuse(a, ("X_pca", "X_morph"), method="stitch", n_comps=(5, 8), key_added="X_st")
    mst.tl.fuse(a, ("X_pca", "X_morph"), method="weighted", n_comps=(5, 8), key_added="X_w")
    mst.tl.fuse(a, ("X_pca", "X_morph"), method="weighted", weights=(3, 1), n_comps=(5, 8), key_added="X_w31")
    st, w, w31 = a.obsm["X_st"], a.obsm["X_w"], a.obsm["X_w31"]
    assert st.shape == w.shape == (a.n_obs, 13)
    # stitch: each block is the PCA of the block-standardised modality (unit total variance before PCA)
    from sklearn.decomposition import PCA

    e = a.obsm["X_pca"] - a.obsm["X_pca"].mean(0)
    e /= np.sqrt((e**2).sum() / (a.n_obs - 1))
    ref = PCA(5).fit_transform(e)
    assert np.allclose(np.abs(st[:, :5]), np.abs(ref), atol=1e-4)
    p = a.uns["X_st"]["params"]
    assert p["n_comps"] == [5, 8]
    assert st[:, :5].var(0, ddof=1).sum() == pytest.approx(p["variance_captured"][0], rel=1e-3)
    # weighted: block variances follow the weights
    assert w[:, :5].var(0, ddof=1).sum() == pytest.approx(0.5, rel=1e-3)
    assert w[:, 5:].var(0, ddof=1).sum() == pytest.approx(0.5, rel=1e-3)
    assert w31[:, :5].var(0, ddof=1).sum() / w31[:, 5:].var(0, ddof=1).sum() == pytest.approx(3.0, rel=1e-3)
    assert a.uns["X_w31"]["params"]["weights"] == pytest.approx([0.75, 0.25])


def test_graph_is_sparse_per_section_and_follows_morphology():
    a = grid_adata(10, sections=2)
    n = a.n_obs
    rng = np.random.default_rng(0)
    a.obsm["X_pca"] = rng.normal(size=(n, 6))
    morph = rng.normal(size=(n, 16)) * 0.1
    left = a.obsm["spatial"][:, 0] < 5
    morph[:, 0] += 5.0 * left
    a.obsm["X_morph"] = morph
    mst.tl.fuse(a, ("X_pca", "X_morph"), method="graph", n_comps=6, n_neighs=4)
    g = a.obsp["X_fused_connectivities"]
    assert sparse.issparse(g)
    assert g.shape == (n, n)
    assert (abs(g - g.T) > 1e-12).nnz == 0
    assert g.diagonal().sum() == 0
    sec = a.obs["section"].to_numpy()
    r, c = g.nonzero()
    assert np.all(sec[r] == sec[c])  # sections are never neighbours, although their coordinates coincide
    assert g.nnz <= n * 4 * 2
    # edges across the morphological border are weaker than within a side
    cross = left[r] != left[c]
    assert cross.any()
    assert g.data[cross].max() < 0.1 * np.median(g.data[~cross])
    # the fused representation is the expression block smoothed by the row-normalised graph (+ self-loop)
    from sklearn.decomposition import PCA

    e = a.obsm["X_pca"] - a.obsm["X_pca"].mean(0)
    e /= np.sqrt((e**2).sum() / (n - 1))
    block = PCA(6).fit_transform(e)
    prop = g + sparse.identity(n)
    prop = sparse.diags(1 / np.asarray(prop.sum(1)).ravel()) @ prop
    assert np.allclose(np.abs(a.obsm["X_fused"]), np.abs(prop @ block), atol=1e-4)
    assert a.uns["X_fused"]["params"]["library_key"] == "section"


def test_smooth_radius_in_spots_per_section_and_morphology_control():
    a = grid_adata(10, sections=2)
    a.obsm["spatial"] = a.obsm["spatial"] * 55.0  # any unit: the radius is in spot spacings
    n = a.n_obs
    rng = np.random.default_rng(0)
    a.obsm["X_pca"] = rng.normal(size=(n, 6))
    morph = rng.normal(size=(n, 2)) * 0.1
    left = a.obsm["spatial"][:, 0] < 5 * 55.0
    morph[:, 0] += 5.0 * left
    a.obsm["X_morph"] = morph
    mst.tl.fuse(a, ("X_pca", "X_morph"), n_comps=6, n_rings=1, n_steps=3, morph_weight=5.0)  # default: smooth
    p = a.uns["X_fused"]["params"]
    assert p["method"] == "smooth"
    assert p["spot_spacing"] == {"S0": pytest.approx(55.0), "S1": pytest.approx(55.0)}
    g = a.obsp["X_fused_connectivities"]
    assert sparse.issparse(g)
    assert (abs(g - g.T) > 1e-12).nnz == 0
    assert g.diagonal().sum() == 0
    r, c = g.nonzero()
    sec = a.obs["section"].to_numpy()
    assert np.all(sec[r] == sec[c])
    # one ring on a square grid: the 4 rook neighbours (radius 1.1 spacings); 2 rings: within 2.1 spacings
    assert g.nnz == 2 * 2 * (2 * 10 * 9)
    assert p["mean_neighbours"] == pytest.approx(g.nnz / n)
    cross = left[r] != left[c]
    assert g.data[cross].max() < 0.1 * np.median(g.data[~cross])
    # the result is the expression block smoothed n_steps times by the row-normalised graph (+ self-loop)
    from sklearn.decomposition import PCA

    e = a.obsm["X_pca"] - a.obsm["X_pca"].mean(0)
    e /= np.sqrt((e**2).sum() / (n - 1))
    block = PCA(6).fit_transform(e)
    prop = g + sparse.identity(n)
    prop = sparse.diags(1 / np.asarray(prop.sum(1)).ravel()) @ prop
    assert np.allclose(np.abs(a.obsm["X_fused"]), np.abs(prop @ (prop @ (prop @ block))), atol=1e-4)
    # morphology off: expression alone gives the unweighted graph; morph_weight=0 is the same
    mst.tl.fuse(a, ("X_pca",), n_comps=6, n_rings=2, key_added="X_off")
    mst.tl.fuse(a, ("X_pca", "X_morph"), n_comps=6, n_rings=2, morph_weight=0.0, key_added="X_off0")
    g2 = a.obsp["X_off_connectivities"]
    assert set(np.unique(g2.data)) == {1.0}
    assert g2.nnz == 2 * (2 * 2 * 10 * 9 + 2 * 2 * 9 * 9 + 2 * 2 * 10 * 8)  # rook, diagonal, 2-step axis
    np.testing.assert_allclose(a.obsm["X_off"], a.obsm["X_off0"], atol=1e-5)
    assert a.uns["X_off"]["params"]["n_steps"] == 5
    assert a.uns["X_off"]["params"]["morph_weight"] == 0.0
    mst.tl.fuse(a, ("X_pca", "X_morph"), key_added="X_def")
    assert a.uns["X_def"]["params"]["morph_weight"] == 0.3
    assert a.uns["X_def"]["params"]["n_comps"] == [6, 2]  # default 20, capped at the features
    for kw, match in [
        ({"n_rings": 0}, "n_rings"),
        ({"morph_weight": -1}, "morph_weight"),
        ({"n_steps": 0}, "n_steps"),
    ]:
        with pytest.raises(ValueError, match=match):
            mst.tl.fuse(a, ("X_pca", "X_morph"), **kw)


def test_graph_caps_n_neighs_per_section_with_a_note():
    a = grid_adata(6, sections=2)
    a = a[np.r_[np.arange(36), 36, 37, 38]].copy()  # section S1: 3 spots
    a.obsm["X_pca"] = np.random.default_rng(0).normal(size=(a.n_obs, 4))
    with pytest.warns(UserWarning, match=r"section 'S1': n_neighs capped at 2 \(3 observations\)"):
        mst.tl.fuse(a, ("X_pca",), method="graph", n_neighs=6, n_comps=4)
    assert a.uns["X_fused"]["params"]["notes"] == ["section 'S1': n_neighs capped at 2 (3 observations)"]
    assert np.isfinite(a.obsm["X_fused"]).all()


def test_fusion_recovers_region_that_only_morphology_carries():
    a, truth = three_regions()
    mst.tl.domains(a, "X_pca", method="kmeans", n_domains=3, key_added="d_expr")
    ari_expr = adjusted_rand_score(truth, a.obs["d_expr"])
    for method in ("stitch", "weighted"):
        mst.tl.fuse(a, ("X_pca", "X_morph"), method=method, n_comps=10, key_added=f"X_{method}")
        for dmethod in ("kmeans", "leiden"):
            key = f"d_{method}_{dmethod}"
            mst.tl.domains(a, f"X_{method}", method=dmethod, n_domains=3, key_added=key)
            ari = adjusted_rand_score(truth, a.obs[key])
            assert a.obs[key].nunique() == 3
            assert ari > 0.9, (method, dmethod, ari)
            assert ari > ari_expr + 0.3, (method, dmethod, ari, ari_expr)
    assert ari_expr < 0.7


# ---------------------------------------------------------------- domains


@pytest.fixture(scope="module")
def her2st_pca(her2st_adata):
    import scanpy as sc

    a = her2st_adata.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=2000)
    sc.pp.pca(a, n_comps=30, random_state=0)
    return a


@pytest.mark.parametrize("k", [4, 7])
def test_domains_exact_k_on_her2st(her2st_pca, k):
    a = her2st_pca.copy()
    mst.tl.domains(a, "X_pca", n_domains=k, key_added="dom")
    assert a.obs["dom"].nunique() == k
    assert list(a.obs["dom"].cat.categories) == [str(i) for i in range(k)]
    p = a.uns["dom"]["params"]
    assert p["n_domains"] == k
    # the recorded resolution reproduces k
    b = her2st_pca.copy()
    mst.tl.domains(b, "X_pca", resolution=p["resolution"], random_state=p["leiden_random_state"], key_added="dom")
    assert b.obs["dom"].nunique() == k
    assert (b.obs["dom"] == a.obs["dom"]).all()
    # and the domains follow the authors' expression clusters (well above chance)
    mst.tl.evaluate_domains(a, "dom", "cluster")
    ev = a.uns["dom_evaluation"]
    assert ev["ari"] > 0.15
    assert ev["n_excluded"] == int(a.obs["cluster"].isna().sum()) == 7
    assert ev["mean_moran_I"] > 0.1  # marker genes of real domains are spatially coherent


def test_kmeans_gmm_labels_and_sdata_input(synthetic_sdata):
    sdata, _ = synthetic_sdata
    t = sdata.tables["table"]
    t.obsm["X_feat"] = np.column_stack([t.X[:, 0], np.zeros(t.n_obs)]).astype(float)
    mst.tl.domains(sdata, "X_feat", method="gmm", n_domains=2, key_added="g")
    mst.tl.domains(sdata, "X_feat", method="kmeans", n_domains=2, key_added="k")
    for key in ("g", "k"):
        assert list(t.obs[key].cat.categories) == ["0", "1"]
        assert adjusted_rand_score(t.obs[key], t.X[:, 0] > np.median(t.X[:, 0])) == pytest.approx(1.0)
    out = mst.tl.domains(t, "X_feat", method="kmeans", n_domains=2, key_added="k2", copy=True)
    assert "k2" in out.obs
    assert "k2" not in t.obs


# ---------------------------------------------------------------- bad input


def test_bad_input_raises_before_writing():
    a, _ = three_regions(10)
    before = snapshot(a)
    with pytest.raises(KeyError, match=r"X_densenet121.*embed_patches"):
        mst.tl.fuse(a, ("X_pca", "X_densenet121"))
    with pytest.raises(ValueError, match="at least two"):
        mst.tl.fuse(a, ("X_pca",), method="stitch")
    with pytest.raises(KeyError, match=r"mst\.tl\.fuse"):
        mst.tl.domains(a, "X_fused")
    with pytest.raises(ValueError, match="n_domains"):
        mst.tl.domains(a, "X_pca", method="kmeans")
    bad = a.obsm["X_morph"].copy()
    bad[3, 2] = np.nan
    a.obsm["X_bad"] = bad
    before = snapshot(a)
    with pytest.raises(ValueError, match="NaN"):
        mst.tl.fuse(a, ("X_pca", "X_bad"), method="graph")
    with pytest.raises(ValueError, match="NaN"):
        mst.tl.domains(a, "X_bad")
    a.obs["domain"] = pd.Categorical(["0", "1"] * (a.n_obs // 2))
    a.obs["one"] = pd.Categorical(["x"] * a.n_obs)
    a.obs["half_nan"] = pd.Categorical(["x"] * (a.n_obs - 3) + [np.nan] * 3)
    before = snapshot(a)
    with pytest.raises(ValueError, match="distinct"):
        mst.tl.evaluate_domains(a, "domain", "one")
    with pytest.raises(ValueError, match="distinct"):
        mst.tl.evaluate_domains(a, "domain", "half_nan")
    with pytest.raises(KeyError, match="Available columns"):
        mst.tl.evaluate_domains(a, "domain", "nope")
    with pytest.raises(KeyError, match=r"run `mst.tl.domains\(adata, use_rep=..., key_added='dom2'\)` first"):
        mst.tl.evaluate_domains(a, "dom2", "one")  # domains not found yet: say which call writes them
    assert snapshot(a) == before


# ---------------------------------------------------------------- real morphology (HER2ST embeddings)


@pytest.mark.slow  # the session fixture embeds 910 patches with two CNNs (shared with other modules)
def test_fuse_real_embeddings_her2st(her2st_embedded):
    import scanpy as sc

    a = her2st_embedded.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=2000)
    sc.pp.pca(a, n_comps=30, random_state=0)
    for method in ("stitch", "weighted", "graph"):
        mst.tl.fuse(a, ("X_pca", "X_densenet121"), method=method, key_added=f"X_{method}")
        assert np.isfinite(a.obsm[f"X_{method}"]).all()
    assert a.obsm["X_stitch"].shape == (a.n_obs, 60)
    g = a.obsp["X_graph_connectivities"]
    r, c = g.nonzero()
    sec = a.obs["section"].to_numpy()
    assert np.all(sec[r] == sec[c])
    # real structure: neighbouring spots of the same expression cluster look more alike than neighbours across
    # clusters, so the morphology-weighted edges within clusters are heavier
    cl = a.obs["cluster"].to_numpy()
    ok = ~pd.isna(cl[r]) & ~pd.isna(cl[c])
    same = cl[r] == cl[c]
    w = np.asarray(g[r, c]).ravel()
    assert w[ok & same].mean() > w[ok & ~same].mean()
    mst.tl.domains(a, "X_weighted", n_domains=7)
    assert a.obs["domain"].nunique() == 7


# ---------------------------------------------------------------- out-of-range input (issue 10)


def test_evaluate_domains_tiny_section_caps_n_neighs():
    """A section of 3 spots (fewer than n_neighs + 1) caps the neighbours there and keeps the others exact."""
    a = grid_adata(12, sections=2)
    keep = np.r_[np.arange(144), 144 + np.array([0, 1, 13])]  # S1 reduced to 3 spots
    a = a[keep].copy()
    a.obs["domain"] = pd.Categorical(np.where(a.obsm["spatial"][:, 0] < 6, "0", "1"))
    mst.tl.evaluate_domains(a, annotation_key=None, genes=["checker", "gradient"], n_neighs=6)
    ev = a.uns["domain_evaluation"]
    assert np.isfinite(ev["autocorr"]["moran_I"]).all()
    assert np.isfinite(ev["autocorr"]["geary_C"]).all()
    assert ev["params"]["notes"] == ["section 'S1': n_neighs capped at 2 (3 observations)"]
    assert ev["autocorr"].loc["gradient", "moran_I"] > 0.8
    # a section of one spot has no neighbours: left out, with a note, still finite
    b = grid_adata(12, sections=2)[np.r_[np.arange(144), 144]].copy()
    b.obs["domain"] = pd.Categorical(np.where(b.obsm["spatial"][:, 0] < 6, "0", "1"))
    mst.tl.evaluate_domains(b, annotation_key=None, genes=["gradient"], n_neighs=6)
    eb = b.uns["domain_evaluation"]
    assert np.isfinite(eb["autocorr"]["moran_I"]).all()
    assert eb["params"]["notes"] == ["section 'S1': 1 observation, left out of the autocorrelation"]


def test_autocorr_pvalues_are_one_sided_towards_the_observed_deviation():
    from scipy import stats

    a = grid_adata(20)
    a.obs["domain"] = pd.Categorical(np.where(a.obsm["spatial"][:, 0] < 10, "0", "1"))
    mst.tl.evaluate_domains(a, annotation_key=None, genes=["checker", "gradient", "noise"], n_neighs=4)
    tab = a.uns["domain_evaluation"]["autocorr"]
    # negative (checkerboard) and positive (gradient) autocorrelation are both significant: one tail each way
    assert tab.loc["checker", "moran_pval"] < 1e-10
    assert tab.loc["gradient", "moran_pval"] < 1e-10
    assert tab.loc["checker", "geary_pval"] < 1e-10
    # one-sided p-values never exceed 0.5
    assert (tab[["moran_pval", "geary_pval"]] <= 0.5).all().all()
    # the noise gene: p = Phi(-|z|) with z from Moran's normality variance on the same graph (row-normalised)
    n = a.n_obs
    b = a.copy()
    import squidpy as sq

    sq.gr.spatial_neighbors(b, coord_type="generic", n_neighs=4)
    w = b.obsp["spatial_connectivities"].tocsr()
    w = sparse.diags(1.0 / np.asarray(w.sum(axis=1)).ravel()) @ w
    s0 = w.sum()
    s1 = ((w + w.T).multiply(w + w.T)).sum() / 2
    s2 = (np.asarray(w.sum(1)).ravel() + np.asarray(w.sum(0)).ravel()) ** 2
    var = (n * n * s1 - n * s2.sum() + 3 * s0**2) / ((n - 1) * (n + 1) * s0**2) - (1 / (n - 1)) ** 2
    z = (tab.loc["noise", "moran_I"] + 1 / (n - 1)) / np.sqrt(var)
    assert tab.loc["noise", "moran_pval"] == pytest.approx(stats.norm.cdf(-abs(z)), rel=1e-6)
    from morphst.tl._integration._evaluate import _geary_pval_calibrated

    assert _geary_pval_calibrated("1.8.2")
    assert not _geary_pval_calibrated("1.7.0")


def test_out_of_range_arguments_are_errors_naming_them():
    g = grid_adata(10)
    g.obs["domain"] = pd.Categorical(["0", "1"] * (g.n_obs // 2))
    with pytest.raises(ValueError, match=r"`n_markers` must be >= 1.*got 0"):
        mst.tl.evaluate_domains(g, annotation_key=None, n_markers=0, normalize=False)
    with pytest.raises(ValueError, match=r"`n_neighs` must be >= 1"):
        mst.tl.evaluate_domains(g, annotation_key=None, n_neighs=0, normalize=False)
    a, _ = three_regions(10)
    for bad in (1, 0, a.n_obs + 1):
        with pytest.raises(ValueError, match=rf"`n_domains` must be between 2 and n_obs={a.n_obs}, got {bad}"):
            mst.tl.domains(a, "X_pca", method="kmeans", n_domains=bad)
    a.obsm["X_zero"] = np.zeros((a.n_obs, 4))
    for method in ("kmeans", "gmm"):
        with pytest.raises(ValueError, match=r"`adata.obsm\['X_zero'\]` is constant"):
            mst.tl.domains(a, "X_zero", method=method, n_domains=3)
    a.obsm["X_two"] = np.repeat([[0.0, 1.0], [1.0, 0.0]], a.n_obs // 2, axis=0)
    with pytest.raises(ValueError, match="has only 2 distinct rows"):
        mst.tl.domains(a, "X_two", method="gmm", n_domains=3)
    with pytest.raises(ValueError, match="covariance_type"):
        mst.tl.domains(a, "X_pca", method="gmm", n_domains=3, covariance_type="diagonal")
    with pytest.raises(ValueError, match="n_neighs"):
        mst.tl.domains(a, "X_pca", n_neighs=0)


def test_domains_caps_n_neighs_with_a_note_and_gmm_covariance():
    a, _ = three_regions(4)  # 16 observations
    with pytest.raises(ValueError, match="there are 16 observations"):
        mst.tl.domains(a, "X_pca", method="leiden", n_neighs=50, n_domains=2)
    assert "domain" not in a.obs
    mst.tl.domains(a, "X_pca", method="leiden", n_neighs=15, n_domains=2)
    assert a.uns["domain"]["params"]["n_neighs"] == 15
    b, truth = three_regions(12)
    mst.tl.domains(b, "X_pca", method="gmm", n_domains=2, key_added="g")
    assert b.uns["g"]["params"]["covariance_type"] == "tied"
    assert adjusted_rand_score(truth > 0, b.obs["g"].astype(int)) == pytest.approx(1.0)
    mst.tl.domains(b, "X_pca", method="gmm", n_domains=2, covariance_type="full", key_added="gf")
    assert b.uns["gf"]["params"]["covariance_type"] == "full"


# ---------------------------------------------------------------- pinned values (issue 12 refactor: unchanged)
PINNED = {
    "smooth": (
        [[-0.515144, 0.034156, -0.032742], [-0.514966, 0.032823, -0.02491], [-0.513931, 0.030248, -0.014326]],
        554.1398,
        10840,
        9320.396024,
    ),
    "graph": (
        [[-0.421769, -0.068508, -0.177969], [-0.432561, 0.106238, -0.154197], [-0.439541, 0.059502, -0.068762]],
        993.6924,
        5686,
        1775.741872,
    ),
    "kmeans": ([438, 414, 124], 0.583911),
    "gmm": ([440, 425, 111], 0.605713),
    "leiden": ([444, 444, 88], 0.64549),
    "eval": (0.60571303, 0.61290855, 0.02131583, 0.02907329, ["g0", "g7", "g6", "g5", "g9", "g1"]),
}


def two_sections_with_counts() -> ad.AnnData:
    a1, _ = three_regions(24, 0)
    a2, _ = three_regions(20, 1)
    a = ad.concat([a1, a2], label="section", keys=["A", "B"], index_unique="-")
    rng = np.random.default_rng(3)
    x = rng.poisson(2.0, size=(a.n_obs, 12)).astype(np.float32)
    x[:, 0] += 4 * (a.obs["truth"].to_numpy() == "1")
    a = ad.AnnData(x, obs=a.obs, obsm=dict(a.obsm), var=pd.DataFrame(index=[f"g{i}" for i in range(12)]))
    a.obs["cluster"] = a.obs["truth"]
    return a


def test_fuse_domains_evaluate_values_pinned_from_before_the_refactor():
    """Values written by the code before the issue-12 refactor (shared graph helper, renames): fuse (smooth,
    graph), domains (kmeans, gmm, leiden) and evaluate_domains on two sections; the outputs were bit-identical."""
    a = two_sections_with_counts()
    for m, kw in [("smooth", {}), ("graph", {"n_neighs": 5})]:
        mst.tl.fuse(a, ("X_pca", "X_morph"), method=m, n_comps=8, key_added=f"F_{m}", **kw)
        f = a.obsm[f"F_{m}"].astype(np.float64)
        g = a.obsp[f"F_{m}_connectivities"]
        first, total, nnz, gsum = PINNED[m]
        np.testing.assert_allclose(f[:3, :3], first, atol=2e-6)
        assert np.abs(f).sum() == pytest.approx(total, rel=1e-6)
        assert g.nnz == nnz
        assert g.sum() == pytest.approx(gsum, rel=1e-9)
        assert a.uns[f"F_{m}"]["connectivities_key"] == f"F_{m}_connectivities"  # scanpy's neighbors contract
    for dm in ("kmeans", "gmm", "leiden"):
        mst.tl.domains(a, "F_smooth", method=dm, n_domains=3, key_added=f"d_{dm}")
        sizes, ari = PINNED[dm]
        assert np.bincount(a.obs[f"d_{dm}"].astype(int)).tolist() == sizes
        assert adjusted_rand_score(a.obs["truth"], a.obs[f"d_{dm}"]) == pytest.approx(ari, abs=1e-6)
    mst.tl.evaluate_domains(a, "d_gmm", "cluster", n_markers=2, n_neighs=5, key_added="ev")
    ev = a.uns["ev"]
    ari, nmi, moran, geary, genes = PINNED["eval"]
    assert (ev["ari"], ev["nmi"]) == (pytest.approx(ari, abs=1e-8), pytest.approx(nmi, abs=1e-8))
    assert ev["mean_moran_I"] == pytest.approx(moran, abs=1e-8)
    assert ev["mean_geary_1mC"] == pytest.approx(geary, abs=1e-8)
    assert list(ev["autocorr"].index) == genes
    assert ev["params"]["domain_key"] == "d_gmm"
    assert ev["params"]["annotation_key"] == "cluster"
    assert "d_gmm_evaluation" not in a.uns  # key_added given


def test_knn_edges_equal_squidpy_per_section():
    import squidpy as sq

    from morphst._utils._graph import knn_edges

    a = two_sections_with_counts()
    coords = a.obsm["spatial"] + np.random.default_rng(0).normal(scale=3.0, size=a.obsm["spatial"].shape)
    rows, cols, dist, caps = knn_edges(coords, a.obs["section"].to_numpy(), n_neighs=7)
    assert caps == {}
    mine = sparse.csr_matrix((dist, (rows, cols)), shape=(a.n_obs, a.n_obs))
    for sec in ("A", "B"):
        idx = np.flatnonzero(a.obs["section"].to_numpy() == sec)
        part = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in idx]))
        part.obsm["spatial"] = coords[idx]
        sq.gr.spatial_neighbors_knn(part, spatial_key="spatial", n_neighs=7)
        want = part.obsp["spatial_distances"]
        got = mine[idx][:, idx]
        assert (got != 0).sum() == (want != 0).sum() == 7 * idx.size
        np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-12)
    # no edge across sections; capped sections noted
    sec = a.obs["section"].to_numpy()
    assert (sec[rows] == sec[cols]).all()
    _, _, _, caps = knn_edges(coords[:5], np.array(["x", "x", "x", "y", "z"]), n_neighs=3)
    assert caps == {"x": 2, "y": 0, "z": 0}


def test_leiden_equals_scanpy_leiden_on_the_same_graph():
    """domains(method='leiden') builds scanpy's igraph graph from the sparse arrays (bounded memory): same labels."""
    import scanpy as sc

    a = two_sections_with_counts()
    a.obsm["X"] = a.obsm["X_pca"][:, :10]
    for res, seed in ((0.5, 0), (1.0, 3)):
        mst.tl.domains(a, "X", method="leiden", resolution=res, random_state=seed, n_neighs=10, key_added="mine")
        b = ad.AnnData(obs=pd.DataFrame(index=a.obs_names), obsm={"X": a.obsm["X"]})
        sc.pp.neighbors(b, use_rep="X", n_neighbors=10, random_state=seed)
        sc.tl.leiden(b, resolution=res, flavor="igraph", n_iterations=2, directed=False, random_state=seed)
        assert adjusted_rand_score(b.obs["leiden"], a.obs["mine"]) == 1.0
        assert a.obs["mine"].nunique() == b.obs["leiden"].nunique()


@pytest.mark.slow  # pynndescent and umap compile with numba on first use: minutes on a busy 2-core machine
def test_leiden_large_data_knn_equals_pynndescent_and_scanpy_labels():
    """Beyond 4,096 observations: the kNN graph read from the fitted pynndescent index (its search index never
    built) equals ``PyNNDescentTransformer.fit_transform``, and the labels equal scanpy's on that graph."""
    import scanpy as sc
    from pynndescent import PyNNDescentTransformer

    from morphst.tl._integration._domains import _knn_transformer

    rng = np.random.default_rng(0)
    n = 5000
    lab = rng.integers(0, 3, n)
    x = (rng.normal(size=(3, 8))[lab] * 2 + rng.normal(size=(n, 8))).astype(np.float32)
    mine = _knn_transformer(n, 10, 0)
    assert mine is not None
    got = mine.fit_transform(x)
    want = PyNNDescentTransformer(**mine.get_params()).fit_transform(x)
    assert isinstance(got, sparse.csr_matrix)
    assert (got != sparse.csr_matrix(want)).nnz == 0
    np.testing.assert_array_equal(got.indices, want.indices)
    a = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(n)]), obsm={"X": x})
    mst.tl.domains(a, "X", method="leiden", resolution=0.3, n_neighs=10, key_added="mine")
    sc.pp.neighbors(a, use_rep="X", n_neighbors=10, transformer=_knn_transformer(n, 10, 0), random_state=0)
    sc.tl.leiden(a, resolution=0.3, flavor="igraph", n_iterations=2, directed=False, random_state=0)
    assert adjusted_rand_score(a.obs["leiden"], a.obs["mine"]) == 1.0
    assert a.obs["mine"].nunique() == a.obs["leiden"].nunique() == 3
    assert adjusted_rand_score(lab, a.obs["mine"]) > 0.99


@pytest.mark.slow  # a fresh process loads pynndescent's compiled functions
def test_first_nndescent_fit_of_a_session_leaves_no_reference_cycles():
    """The first NN-descent fit in a process leaves ~900,000 objects in reference cycles (numba's first call into
    pynndescent), which kept large arrays alive (~0.6 GB at 10^6 cells) until a full garbage
    collection; the kNN step collects them. Run in a fresh process with automatic collection off."""
    import subprocess
    import sys

    code = (
        "import gc, numpy as np\n"
        "from morphst.tl._integration._domains import _knn_transformer\n"
        "x = np.random.default_rng(0).normal(size=(5000, 8)).astype(np.float32)\n"
        "gc.disable()\n"
        "_knn_transformer(5000, 10, 0).fit_transform(x)\n"
        "print('left', gc.collect())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    left = int(out.split("left")[-1])
    assert left < 1000  # before the collection in the kNN step: 878,164 here


def test_evaluate_domains_without_annotation_gives_spatial_metrics(morphst_log):
    import squidpy as sq

    a = grid_adata(16)
    a.obs["domain"] = pd.Categorical(np.where(a.obsm["spatial"][:, 0] < 8, "0", "1"))
    a.obs["cluster"] = a.obs["domain"].copy()  # a column named like HER2ST's is not used unless asked for
    mst.tl.evaluate_domains(a, genes=["gradient"], n_neighs=4, normalize=False)
    ev = a.uns["domain_evaluation"]
    assert "ari" not in ev
    assert ev["params"].get("annotation_key") is None
    assert "spatial coherence only" in morphst_log.text
    # the gradient along x is spatially coherent: Moran's I equals the textbook value on the same graph
    b = a.copy()
    sq.gr.spatial_neighbors(b, coord_type="generic", n_neighs=4, library_key="section")
    v = b[:, "gradient"].X.ravel().astype(float)
    assert ev["mean_moran_I"] == pytest.approx(morans_i(v, b.obsp["spatial_connectivities"].tocsr()), abs=1e-6)
    assert ev["mean_moran_I"] > 0.5


def test_fuse_refuses_n_neighs_no_section_can_honour():
    """Two sections of 36 spots: n_neighs=10,000 was recorded while 35 were used; now a clear error."""
    a = grid_adata(6, sections=2)
    a.obsm["X_pca"] = np.random.default_rng(0).normal(size=(a.n_obs, 4))
    with pytest.raises(ValueError, match=r"largest section has 36 observations \(so at most 35 neighbours\)"):
        mst.tl.fuse(a, ("X_pca",), method="graph", n_neighs=10_000, n_comps=4)
    assert "X_fused" not in a.obsm
    mst.tl.fuse(a, ("X_pca",), method="graph", n_neighs=35, n_comps=4)  # every other spot of its section
    g = a.obsp["X_fused_connectivities"]
    assert g.getnnz(axis=1).tolist() == [35] * a.n_obs


def test_domains_on_one_spot_is_a_clear_error():
    a = grid_adata(4)
    a.obsm["X_pca"] = np.random.default_rng(0).normal(size=(a.n_obs, 3))
    one = a[:1].copy()
    for method, n in (("leiden", None), ("kmeans", 2), ("gmm", 2)):
        with pytest.raises(ValueError, match="at least 3 observations, got 1"):
            mst.tl.domains(one, "X_pca", method=method, n_domains=n)
    assert "domain" not in one.obs


def test_fuse_library_key_default_none_and_a_missing_column():
    """Default "section": a graph within each section; ``None``: one section (the two overlapping grids become
    neighbours); the default column absent: one section too; any other missing column is an error."""
    a = grid_adata(6, sections=2)
    a.obsm["X_pca"] = a.X.astype(np.float64)
    mst.tl.fuse(a, ("X_pca",), key_added="d")
    mst.tl.fuse(a, ("X_pca",), library_key="section", key_added="s")
    mst.tl.fuse(a, ("X_pca",), library_key=None, key_added="n")
    np.testing.assert_array_equal(a.obsm["d"], a.obsm["s"])
    sec = a.obs["section"].to_numpy()
    rows, cols = a.obsp["d_connectivities"].nonzero()
    assert (sec[rows] == sec[cols]).all()
    rows, cols = a.obsp["n_connectivities"].nonzero()
    assert (sec[rows] != sec[cols]).any()
    assert not np.allclose(a.obsm["d"], a.obsm["n"])
    assert a.uns["d"]["params"]["library_key"] == "section"
    assert "library_key" not in a.uns["n"]["params"]
    b = a.copy()
    del b.obs["section"]
    mst.tl.fuse(b, ("X_pca",), key_added="n")
    np.testing.assert_array_equal(b.obsm["n"], a.obsm["n"])
    with pytest.raises(KeyError, match="nope"):
        mst.tl.fuse(a, ("X_pca",), library_key="nope")
