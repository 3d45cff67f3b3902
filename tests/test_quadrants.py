"""Tests of the quadrant framework: mst.tl.quadrants / gene_quadrants / select_features and mst.pl.quadrants."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.feature_selection import mutual_info_classif

import morphst as mst

N = 600
DESIGNED = {"0": "translation", "1": "integration", "2": "noise", "3": "overestimation"}


def make_quadrant_adata(seed: int = 0, n_extra_noise: int = 4, n: int = N) -> ad.AnnData:
    """Spots in 3 balanced classes; genes and features built so that features 0–3 land in quadrants I–IV.

    Contrasts c1 = (-1, 0, 1) and c2 = (1, -2, 1) over the classes are orthogonal, so a feature following c2 is
    relevant but uncorrelated with the gene that follows c1.
    - gene ``g_label`` = c1[label] + noise; gene ``g_other`` independent of the labels; 3 noise genes.
    - feature 0 = g_label + small noise (translation), feature 1 = c2[label] + noise (integration),
      feature 2 = noise, feature 3 = g_other + small noise (overestimation); then pure-noise features.
    """
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(3), n // 3)
    rng.shuffle(label)
    c1, c2 = np.array([-1.0, 0.0, 1.0]), np.array([1.0, -2.0, 1.0]) / np.sqrt(3)
    g_label = c1[label] + 0.5 * rng.normal(size=n)
    g_other = rng.normal(size=n)
    genes = np.column_stack([g_label, g_other, rng.normal(size=(n, 3))])
    feats = np.column_stack(
        [
            g_label + 0.2 * rng.normal(size=n),
            c2[label] + 0.5 * rng.normal(size=n),
            rng.normal(size=n),
            g_other + 0.2 * rng.normal(size=n),
            rng.normal(size=(n, n_extra_noise)),
        ]
    ).astype(np.float32)
    obs = pd.DataFrame({"cluster": pd.Categorical(np.array(["a", "b", "c"])[label])}, index=[f"s{i}" for i in range(n)])
    adata = ad.AnnData(genes.astype(np.float32), obs=obs)
    adata.var_names = ["g_label", "g_other", "n1", "n2", "n3"]
    adata.var["highly_variable"] = True
    adata.obsm["X_toy"] = feats
    return adata


@pytest.fixture(scope="module")
def toy() -> ad.AnnData:
    adata = make_quadrant_adata()
    mst.tl.quadrants(adata, "X_toy", n_perms=30)
    return adata


def test_designed_features_land_in_their_quadrant(toy):
    df = toy.uns["quadrants"]["features"]
    for feat, quad in DESIGNED.items():
        assert df.loc[feat, "quadrant"] == quad, (feat, df.loc[feat].to_dict(), toy.uns["quadrants"]["thresholds"])
    assert df.loc["0", "best_gene"] == "g_label"
    assert df.loc["3", "best_gene"] == "g_other"
    assert list(df["quadrant"].cat.categories) == ["translation", "integration", "noise", "overestimation"]
    assert df["quadrant"].cat.ordered
    shares = toy.uns["quadrants"]["shares"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["translation"] == pytest.approx((df["quadrant"] == "translation").mean())


def test_mi_and_r_equal_sklearn_numpy(toy):
    df = toy.uns["quadrants"]["features"]
    x = toy.obsm["X_toy"]
    y = toy.obs["cluster"].cat.codes.to_numpy()
    mi = mutual_info_classif(x, y, discrete_features=False, n_neighbors=3, random_state=0)
    np.testing.assert_allclose(df["relevance"].to_numpy(), mi, rtol=1e-10, atol=1e-12)
    r = np.abs(np.corrcoef(np.asarray(toy.X, dtype=np.float64).T, x.astype(np.float64).T)[:5, 5:])
    np.testing.assert_allclose(toy.varm["quadrants"], r, rtol=1e-5, atol=1e-6)
    assert toy.varm["quadrants"].dtype == np.float32
    np.testing.assert_allclose(df["shared"].to_numpy(), r.max(axis=0), rtol=1e-10)
    # relevance of the designed features: relevant ones clearly above the threshold
    thr = toy.uns["quadrants"]["thresholds"]
    assert df.loc["1", "relevance"] > 5 * thr["relevance"]
    assert 0 < thr["shared"] < 0.25  # chance max |r| over 5 genes with 600 spots is about 0.1


def test_same_seed_identical_and_seed_matters():
    a, b = make_quadrant_adata(), make_quadrant_adata()
    mst.tl.quadrants(a, "X_toy", n_perms=10, random_state=3)
    mst.tl.quadrants(b, "X_toy", n_perms=10, random_state=3)
    pd.testing.assert_frame_equal(a.uns["quadrants"]["features"], b.uns["quadrants"]["features"])
    assert a.uns["quadrants"]["thresholds"] == b.uns["quadrants"]["thresholds"]
    np.testing.assert_array_equal(a.varm["quadrants"], b.varm["quadrants"])
    c = mst.tl.quadrants(make_quadrant_adata(), "X_toy", n_perms=10, random_state=4, copy=True)
    assert c.uns["quadrants"]["thresholds"] != a.uns["quadrants"]["thresholds"]


def test_median_and_fixed_thresholds_missing_labels_and_gene_subset():
    adata = make_quadrant_adata()
    adata.obs["cluster"] = adata.obs["cluster"].astype(object)
    adata.obs.iloc[:7, 0] = np.nan
    out = mst.tl.quadrants(adata, "X_toy", genes=["g_label", "n1"], thresholds="median", copy=True)
    res = out.uns["quadrants"]
    df = res["features"]
    assert res["thresholds"]["shared"] == pytest.approx(np.median(df["shared"]))
    assert res["thresholds"]["relevance"] == pytest.approx(np.median(df["relevance"]))
    assert res["params"]["n_obs_excluded_missing_annotation"] == 7
    assert res["params"]["n_obs_used"] == N - 7
    # only the chosen genes are filled in varm; the others are NaN
    v = out.varm["quadrants"]
    assert np.isfinite(v[[0, 2]]).all()
    assert np.isnan(v[[1, 3, 4]]).all()
    # r computed on the annotated spots only
    r = abs(np.corrcoef(adata.X[7:, 0], adata.obsm["X_toy"][7:, 0])[0, 1])
    assert v[0, 0] == pytest.approx(r, rel=1e-5)
    assert "quadrants" not in adata.uns  # copy=True left the input alone
    assert "quadrants" not in adata.varm
    fixed = mst.tl.quadrants(adata, "X_toy", thresholds=(0.5, 0.05), copy=True).uns["quadrants"]
    assert fixed["thresholds"] == {"shared": 0.5, "relevance": 0.05}
    f = fixed["features"]
    expected = np.where(f["relevance"] > 0.05, np.where(f["shared"] > 0.5, "translation", "integration"), "")
    expected = np.where(expected == "", np.where(f["shared"] > 0.5, "overestimation", "noise"), expected)
    np.testing.assert_array_equal(np.asarray(f["quadrant"], dtype=str), expected)


@pytest.mark.parametrize(
    ("change", "kwargs", "exc", "match"),
    [
        ("one_category", {}, ValueError, "at least 2 categories"),
        (None, {"genes": ["g_label", "NOPE"]}, KeyError, "NOPE"),
        (None, {"use_rep": "X_missing"}, KeyError, "embed_patches"),
        ("no_hvg", {}, KeyError, "highly_variable_genes"),
        (None, {"annotation_key": "nope"}, KeyError, "Available columns"),
        (None, {"thresholds": "bogus"}, ValueError, "thresholds"),
        (None, {"layer": "lognorm"}, KeyError, "Available"),
    ],
)
def test_bad_input_raises_and_writes_nothing(change, kwargs, exc, match):
    adata = make_quadrant_adata()
    if change == "one_category":
        adata.obs["cluster"] = pd.Categorical(["a"] * N)
    if change == "no_hvg":
        del adata.var["highly_variable"]
    before_uns, before_varm = set(adata.uns), set(adata.varm)
    use_rep = kwargs.pop("use_rep", "X_toy")
    with pytest.raises(exc, match=match):
        mst.tl.quadrants(adata, use_rep, n_perms=2, **kwargs)
    assert set(adata.uns) == before_uns
    assert set(adata.varm) == before_varm


def test_select_features(toy):
    adata = toy.copy()
    mst.tl.select_features(adata, "X_toy", "translation")
    q = toy.uns["quadrants"]["features"]["quadrant"].to_numpy()
    cols = np.flatnonzero(q == "translation")
    np.testing.assert_array_equal(adata.obsm["X_toy_translation"], toy.obsm["X_toy"][:, cols])
    np.testing.assert_array_equal(adata.uns["X_toy_translation"]["params"]["features"], cols)
    mst.tl.select_features(adata, "X_toy", ["translation", "integration"], key_added="X_sel")
    cols2 = np.flatnonzero(np.isin(q, ["translation", "integration"]))
    np.testing.assert_array_equal(adata.obsm["X_sel"], toy.obsm["X_toy"][:, cols2])
    with pytest.raises(ValueError, match="Unknown quadrant"):
        mst.tl.select_features(adata, "X_toy", "bogus")
    with pytest.raises(KeyError, match=r"mst\.tl\.quadrants"):
        mst.tl.select_features(adata, "X_toy", quadrants_key="nothing_here")
    adata.obsm["X_other"] = adata.obsm["X_toy"]
    with pytest.raises(ValueError, match="computed on 'X_toy'"):
        mst.tl.select_features(adata, "X_other")


def test_gene_quadrants_flags_well_predicted_irrelevant_gene():
    """A 'housekeeping' gene predicted well but unrelated to the labels lands in overestimation."""
    adata = make_quadrant_adata()
    rng = np.random.default_rng(1)
    x = np.asarray(adata.X, dtype=np.float64)
    # predictions: good for g_label (0) and g_other (1), useless for n1 (2), not predicted for n2, n3
    pred = np.full_like(x, np.nan)
    pred[:, 0] = x[:, 0] + 0.3 * rng.normal(size=N)
    pred[:, 1] = x[:, 1] + 0.3 * rng.normal(size=N)
    pred[:, 2] = rng.normal(size=N)
    sections = np.repeat(["A", "B", "C"], N // 3)
    pred[sections == "C", 1] = np.nan  # g_other not selected in fold C (select_in_fold)
    adata.layers["predicted"] = pred.astype(np.float32)
    adata.obs["predicted_fold"] = pd.Categorical(sections)
    pcc = np.full(adata.n_vars, np.nan)
    for j in range(3):
        pcc[j] = np.nanmean([np.corrcoef(pred[sections == s, j], x[sections == s, j])[0, 1] for s in "ABC"])
    adata.var["predicted_pcc"] = pcc
    adata.uns["predicted"] = {"params": {"library_key": "section", "target": "X"}}
    mst.tl.gene_quadrants(adata, n_perms=20)
    res = adata.uns["gene_quadrants"]
    assert res["params"]["library_key"] == "predicted_fold"
    assert list(res["genes"].index) == ["g_label", "g_other", "n1"]
    q = adata.var["gene_quadrants"]
    assert q["g_label"] == "translation"
    assert q["g_other"] == "overestimation"
    assert q["n1"] == "noise"
    assert pd.isna(q["n2"])
    assert adata.var["gene_quadrants_overestimation"].tolist() == [False, True, False, False, False]
    y = adata.obs["cluster"].cat.codes.to_numpy()
    mi = mutual_info_classif(x[:, :3], y, discrete_features=False, n_neighbors=3, random_state=0)
    np.testing.assert_allclose(adata.var["gene_quadrants_relevance"].to_numpy()[:3], mi, rtol=1e-10)
    assert np.isnan(adata.var["gene_quadrants_relevance"].to_numpy()[3:]).all()
    # chance PCC averaged over 3 sections of 200 spots: 95th percentile about 1.645 / sqrt(3 * 199) = 0.067
    assert 0.02 < res["thresholds"]["pcc"] < 0.15


def test_gene_quadrants_needs_predict_expression():
    adata = make_quadrant_adata()
    with pytest.raises(KeyError, match=r"predict_expression"):
        mst.tl.gene_quadrants(adata)
    assert "gene_quadrants" not in adata.uns
    assert "gene_quadrants" not in adata.var.columns


def test_gene_quadrants_wrong_layer_or_nan_values_write_nothing():
    """A mistyped layer names the close one; NaN in the observed values of a predicted gene is an error."""
    adata = make_quadrant_adata()
    x = np.asarray(adata.X, dtype=np.float64)
    adata.layers["log1p_cp10k"] = x.copy()
    adata.layers["predicted"] = (x + 1.0).astype(np.float32)
    adata.var["predicted_pcc"] = 0.5
    adata.obs["predicted_fold"] = pd.Categorical(np.repeat(["A", "B", "C"], 200))
    with pytest.raises(KeyError, match=r"Did you mean 'log1p_cp10k'"):
        mst.tl.gene_quadrants(adata, layer="log1p")
    adata.layers["log1p_cp10k"][7, 2] = np.nan
    with pytest.raises(ValueError, match=r"layer 'log1p_cp10k'\) contains NaN"):
        mst.tl.gene_quadrants(adata, layer="log1p_cp10k", n_perms=5)
    assert "gene_quadrants" not in adata.uns
    assert not any(c.startswith("gene_quadrants") for c in adata.var.columns)


# ---------------------------------------------------------------------------------------------------------- plots
def test_pl_quadrants_figure(toy, tmp_path):
    import matplotlib.pyplot as plt
    from PIL import Image

    adata = toy.copy()
    mst.tl.quadrants(adata, "X_toy", thresholds="median", key_added="quadrants_median")
    fig = mst.pl.quadrants(adata, compare="quadrants_median", return_fig=True)
    axes = [a for a in fig.axes if a.collections]
    assert len(axes) == 2
    assert [a.get_title() for a in axes] == ["X_toy (quadrants)", "X_toy (quadrants_median)"]
    assert "relevance" in axes[0].get_ylabel()
    assert "max |Pearson r|" in axes[0].get_xlabel()
    # threshold lines at the stored thresholds
    thr = adata.uns["quadrants"]["thresholds"]
    xs = [ln.get_xdata()[0] for ln in axes[0].lines if ln.get_xdata()[0] == ln.get_xdata()[1]]
    assert thr["shared"] in xs
    n_points = sum(len(c.get_offsets()) for c in axes[0].collections)
    assert n_points == adata.obsm["X_toy"].shape[1]
    path = tmp_path / "q.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    img = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert img.std() > 10  # not blank

    fig2, ax = plt.subplots()
    assert mst.pl.quadrants(adata, ax=ax, show=False) is None
    assert ax.collections
    with pytest.raises(ValueError, match="needs 2 axes"):
        mst.pl.quadrants(adata, compare="quadrants_median", ax=ax, show=False)
    plt.close(fig2)


def test_pl_quadrants_missing_result():
    adata = make_quadrant_adata()
    with pytest.raises(KeyError, match=r"mst\.tl\.quadrants"):
        mst.pl.quadrants(adata)


# ------------------------------------------------------------------------------------------------------- real data
def test_her2st_expression_features_are_shared_shuffled_are_noise(her2st_adata):
    """On HER2ST C2–C6: 'features' that are HVG expression itself are shared, and mostly relevant to the authors'
    clusters (which come from expression); the same features with spots shuffled are noise."""
    import scanpy as sc

    adata = her2st_adata.copy()
    adata.layers["lognorm"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4, layer="lognorm")
    sc.pp.log1p(adata, layer="lognorm")
    sc.pp.highly_variable_genes(adata, layer="lognorm", n_top_genes=50, flavor="seurat")
    hvg = adata.var_names[adata.var["highly_variable"]]
    expr = adata[:, hvg[:6]].layers["lognorm"]
    expr = np.asarray(expr.toarray() if hasattr(expr, "toarray") else expr, dtype=np.float32)
    rng = np.random.default_rng(0)
    adata.obsm["X_fake"] = np.hstack([expr, expr[rng.permutation(adata.n_obs)]])
    mst.tl.quadrants(adata, "X_fake", layer="lognorm", n_perms=20)
    res = adata.uns["quadrants"]
    df = res["features"]
    assert res["params"]["n_obs_excluded_missing_annotation"] == 7  # 7 HER2ST spots have no cluster
    # all six are shared (r = 1 with themselves); most are relevant to the expression-derived clusters
    assert df["quadrant"].iloc[:6].isin(["translation", "overestimation"]).all()
    assert (df["quadrant"].iloc[:6] == "translation").sum() >= 4
    np.testing.assert_allclose(df["shared"].iloc[:6], 1.0, atol=1e-5)  # each equals one of the genes
    assert list(df["best_gene"].iloc[:6]) == list(hvg[:6])
    assert (df["quadrant"].iloc[6:] == "noise").sum() >= 5


def test_her2st_densenet_features_beyond_chance(her2st_embedded):
    """ImageNet DenseNet-121 features of HER2ST patches: far more than the nominal 5% of features are relevant to
    the clusters and shared with the HVGs above the permutation 95th percentile; select_features keeps them."""
    import scanpy as sc

    adata = her2st_embedded.copy()
    adata.layers["lognorm"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4, layer="lognorm")
    sc.pp.log1p(adata, layer="lognorm")
    sc.pp.highly_variable_genes(adata, layer="lognorm", n_top_genes=50, flavor="seurat")
    mst.tl.quadrants(adata, "X_densenet121", layer="lognorm", n_perms=20, n_null_features=16)
    res = adata.uns["quadrants"]
    shares = res["shares"]
    assert shares["translation"] + shares["integration"] > 0.2  # relevant above chance
    assert shares["translation"] + shares["overestimation"] > 0.2  # shared above chance
    assert adata.varm["quadrants"].shape == (adata.n_vars, 1024)
    assert np.isfinite(adata.varm["quadrants"][adata.var["highly_variable"].to_numpy()]).all()
    assert res["features"]["best_gene"].isin(adata.var_names[adata.var["highly_variable"]]).all()
    mst.tl.select_features(adata, "X_densenet121", "translation")
    n_i = int((res["features"]["quadrant"] == "translation").sum())
    assert adata.obsm["X_densenet121_translation"].shape == (adata.n_obs, n_i)


# ------------------------------------------------------------------------------------------------------------------
# issue 10: thresholds outside their axis and duplicated gene names are errors, not empty quadrants
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("thresholds", "match"),
    [
        ((1.2, 0.1), r"`thresholds\[0\]` \(the \|Pearson r\| threshold\) must lie in \[0, 1\)"),
        ((1.0, 0.1), r"`thresholds\[0\]`"),
        ((-0.1, 0.1), r"`thresholds\[0\]`"),
        ((0.5, -0.01), r"`thresholds\[1\]` \(the relevance threshold"),
        ((0.5, 1.2), r"must lie in \[0, 1.1\) for an annotation of 3 categories"),  # ln 3 = 1.0986
    ],
)
def test_fixed_thresholds_outside_their_axis(thresholds, match):
    adata = make_quadrant_adata()
    with pytest.raises(ValueError, match=match):
        mst.tl.quadrants(adata, "X_toy", thresholds=thresholds)
    assert "quadrants" not in adata.uns
    assert "quadrants" not in adata.varm


def test_fixed_thresholds_at_the_edges_are_right():
    adata = make_quadrant_adata()
    mst.tl.quadrants(adata, "X_toy", thresholds=(0.0, 0.0))
    f = adata.uns["quadrants"]["features"]
    # strictly above 0 on both axes: every feature with some MI and some |r| is in quadrant I
    want = np.where(f["relevance"] > 0, np.where(f["shared"] > 0, "translation", "integration"), "")
    want = np.where(want == "", np.where(f["shared"] > 0, "overestimation", "noise"), want)
    np.testing.assert_array_equal(np.asarray(f["quadrant"], dtype=str), want)


def test_duplicated_var_names_and_bad_n_neighs():
    adata = make_quadrant_adata()
    adata.var_names = ["g_label", "g_label", "n1", "n2", "n3"]
    with pytest.raises(ValueError, match=r"'g_label'.*var_names_make_unique\(\)"):
        mst.tl.quadrants(adata, "X_toy", genes=["n1"], n_perms=2)
    adata = make_quadrant_adata()
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="`n_neighs` must be a positive integer"):
            mst.tl.quadrants(adata, "X_toy", n_neighs=bad, n_perms=2)
    assert "quadrants" not in adata.uns


def _gene_quadrant_adata():
    adata = make_quadrant_adata()
    adata.var["predicted_pcc"] = [0.8, 0.7, np.nan, 0.1, -0.2]
    return adata


def test_gene_quadrants_thresholds_and_duplicates():
    adata = _gene_quadrant_adata()
    with pytest.raises(ValueError, match=r"`thresholds\[0\]` \(the Pearson r threshold\) must lie in \[-1, 1\)"):
        mst.tl.gene_quadrants(adata, thresholds=(1.5, 0.1))
    with pytest.raises(ValueError, match=r"`thresholds\[1\]`"):
        mst.tl.gene_quadrants(adata, thresholds=(0.5, 5.0))
    assert "gene_quadrants" not in adata.uns
    # a negative PCC threshold is on the axis: genes above it count as predictable
    mst.tl.gene_quadrants(adata, thresholds=(-0.1, 0.05))
    df = adata.uns["gene_quadrants"]["genes"]
    assert list(df.index) == ["g_label", "g_other", "n2", "n3"]
    pred = df["pcc"] > -0.1
    rel = df["relevance"] > 0.05
    want = np.where(rel, np.where(pred, "translation", "integration"), np.where(pred, "overestimation", "noise"))
    np.testing.assert_array_equal(np.asarray(df["quadrant"], dtype=str), want)
    assert df.loc["n3", "quadrant"] in ("noise", "integration")  # PCC -0.2 is below the threshold
    b = _gene_quadrant_adata()
    b.var_names = ["g_label", "n2", "n1", "n2", "n3"]
    with pytest.raises(ValueError, match="var_names_make_unique"):
        mst.tl.gene_quadrants(b, thresholds="median")


# ------------------------------------------------------------------------------------- cell scale: subsampled path
def test_mutual_info_1d_equals_sklearn_on_continuous_data():
    from morphst._utils._stats import mutual_info_1d

    rng = np.random.default_rng(0)
    n = 3000
    y = rng.integers(0, 4, n)
    y[:2] = 7  # a label of 2 observations (k capped at 1)
    y[2] = 9  # a label of one observation: left out, as scikit-learn does
    x = np.column_stack(
        [rng.normal(size=n) + 0.5 * y, rng.normal(size=n), rng.exponential(size=n) * (y + 1), 1e6 * rng.normal(size=n)]
    )
    for k in (1, 3, 5):
        want = mutual_info_classif(x, y, discrete_features=False, n_neighbors=k, random_state=0)
        # same jitter draws; inputs scaled to within an ulp of scikit-learn's can move one neighbour count at a tie
        np.testing.assert_allclose(mutual_info_1d(x, y, n_neighbors=k, random_state=0), want, atol=1e-5)


def test_abs_pearson_chunked_equals_numpy():
    from morphst._utils._stats import abs_pearson_chunked

    rng = np.random.default_rng(1)
    g = rng.normal(size=(5000, 6))
    f = rng.normal(size=(5000, 40)).astype(np.float32)
    f[:, 0] += 3 * g[:, 0].astype(np.float32)
    f[:, 5] = 2.0  # constant: 0
    rows = np.sort(rng.choice(5000, 3000, replace=False))
    want = np.nan_to_num(np.abs(np.corrcoef(g[rows].T, f[rows].astype(np.float64).T)[:6, 6:]))
    np.testing.assert_allclose(abs_pearson_chunked(g, f, rows, chunk=777), want, atol=2e-6)


def test_subsampled_quadrants_find_the_designed_features_and_record_the_subsample():
    big = make_quadrant_adata(seed=2, n=6000, n_extra_noise=0)  # the 4 designed features, far from chance
    out = mst.tl.quadrants(big, "X_toy", n_perms=10, max_obs=1500, copy=True)
    res = out.uns["quadrants"]
    df = res["features"]
    for feat, quad in DESIGNED.items():
        assert df.loc[feat, "quadrant"] == quad, (feat, df.loc[feat].to_dict(), res["thresholds"])
    p = res["params"]
    assert p["max_obs"] == 1500
    assert p["relevance_subsample"] == 1500
    assert "default_rng([0, 1])" in p["relevance_subsample_rule"]
    st = res["stability"]
    assert st["agreement"] == 1.0
    assert st["stable"]
    assert st["max_share_difference"] == 0.0
    assert st["tolerance"] == 0.05
    # relevance = MI on the recorded subsample (first max_obs of the seeded permutation, sorted)
    rows = np.sort(np.random.default_rng([0, 1]).permutation(6000)[:1500])
    y = big.obs["cluster"].cat.codes.to_numpy()[rows]
    want = mutual_info_classif(big.obsm["X_toy"][rows], y, discrete_features=False, n_neighbors=3, random_state=0)
    np.testing.assert_allclose(df["relevance"].to_numpy(), want, atol=1e-5)
    # shared information on every observation
    r = np.abs(np.corrcoef(np.asarray(big.X, dtype=np.float64).T, big.obsm["X_toy"].astype(np.float64).T)[:5, 5:])
    np.testing.assert_allclose(df["shared"].to_numpy(), r.max(axis=0), atol=2e-6)
    # chance max |r| over 5 genes on 6000 spots: about 2.5 / sqrt(6000) = 0.03
    assert 0.01 < res["thresholds"]["shared"] < 0.06
    # seeded: identical on a rerun
    again = mst.tl.quadrants(big, "X_toy", n_perms=10, max_obs=1500, copy=True).uns["quadrants"]
    pd.testing.assert_frame_equal(again["features"], df)
    assert again["thresholds"] == res["thresholds"]


def test_max_obs_above_n_changes_nothing(toy):
    out = mst.tl.quadrants(make_quadrant_adata(), "X_toy", n_perms=30, max_obs=None, copy=True).uns["quadrants"]
    pd.testing.assert_frame_equal(out["features"], toy.uns["quadrants"]["features"])
    assert out["thresholds"] == toy.uns["quadrants"]["thresholds"]
    assert "stability" not in toy.uns["quadrants"]
    assert "relevance_subsample" not in toy.uns["quadrants"]["params"]
    assert toy.uns["quadrants"]["params"]["max_obs"] == 20_000


def test_unstable_subsamples_warn():
    # two subsamples of 200 of 600 spots, 3 permutations: the noise features' verdicts differ between them (one of
    # the 8 features moves: a share difference of 1/8, beyond the tolerance)
    adata = make_quadrant_adata()
    with pytest.warns(UserWarning, match="independent subsamples"):
        mst.tl.quadrants(adata, "X_toy", n_perms=3, max_obs=200)
    stability = adata.uns["quadrants"]["stability"]
    assert stability["stable"] is False
    assert stability["max_share_difference"] > stability["tolerance"]
    with pytest.raises(ValueError, match="`max_obs` must be an integer >= 100"):
        mst.tl.quadrants(adata, "X_toy", max_obs=10)


def test_subsampled_gene_quadrants():
    adata = make_quadrant_adata()
    x = np.asarray(adata.X, dtype=np.float64)
    rng = np.random.default_rng(5)
    adata.layers["predicted"] = (x + rng.normal(size=x.shape)).astype(np.float32)
    adata.var["predicted_pcc"] = [0.8, 0.7, 0.01, 0.0, -0.01]
    mst.tl.gene_quadrants(adata, n_perms=5, max_obs=300)
    res = adata.uns["gene_quadrants"]
    assert res["params"]["relevance_subsample"] == 300
    rows = np.sort(np.random.default_rng([0, 1]).permutation(N)[:300])
    y = adata.obs["cluster"].cat.codes.to_numpy()[rows]
    want = mutual_info_classif(x[rows], y, discrete_features=False, n_neighbors=3, random_state=0)
    np.testing.assert_allclose(res["genes"]["relevance"].to_numpy(), want, atol=1e-5)
    assert set(res["stability"]) >= {"agreement", "max_share_difference", "tolerance", "stable"}
    assert adata.var["gene_quadrants"]["g_label"] == "translation"


def test_gene_quadrants_values_pinned_from_before_the_refactor():
    """Values of the code before the issue-12 refactor (one Pearson r helper: the PCC threshold moved by 1 ulp).

    Issue 13: the PCC null standardises the predictions once in float32 (bounded memory at 10^6 cells), which
    moved the PCC threshold by 8e-9 relative; relevance (now the sorted-values MI estimator) is unchanged.
    """
    adata = make_quadrant_adata()
    x = np.asarray(adata.X, dtype=np.float64)
    rng = np.random.default_rng(3)
    pred = x + rng.normal(size=x.shape) * np.array([0.5, 0.5, 3, 3, 3])
    pred[:, 4] = np.nan
    sections = np.repeat(["A", "B", "C"], 200)
    pred[sections == "C", 1] = np.nan
    adata.layers["predicted"] = pred.astype(np.float32)
    adata.obs["predicted_fold"] = pd.Categorical(sections)
    pcc = np.full(adata.n_vars, np.nan)
    for j in range(4):
        r = [np.corrcoef(pred[sections == s, j], x[sections == s, j])[0, 1] for s in "ABC"]
        pcc[j] = np.nanmean(r)
    adata.var["predicted_pcc"] = pcc
    adata.uns["predicted"] = {"params": {"target": "X"}}
    mst.tl.gene_quadrants(adata, n_perms=30)
    res = adata.uns["gene_quadrants"]
    assert res["thresholds"]["relevance"] == pytest.approx(0.034015658590353645, rel=1e-12)
    assert res["thresholds"]["pcc"] == pytest.approx(0.07297503174450153, rel=1e-7)
    np.testing.assert_allclose(
        res["genes"]["relevance"], [0.6404952299535751, 0.0, 0.01228429177111856, 0.02355477268511663], rtol=1e-12
    )
    assert list(res["genes"]["quadrant"].astype(str)) == ["translation", "overestimation"] + ["overestimation"] * 2


def _null_draws(pred, observed, groups, n_genes, seeds, **kw):
    """The draws of gene_quadrants' predictability null for generators seeded ``seeds``."""
    from morphst.tl._quadrants._genes import _pcc_null

    record, finish = _pcc_null(pred, observed, groups, n_genes, **kw)
    for s in seeds:
        assert record(np.random.default_rng(s)) is None
    return finish()


def test_pcc_null_draw_equals_pearson_of_shuffled_values():
    """One draw of gene_quadrants' predictability null = Pearson r of predictions with shuffled observations."""
    from scipy import sparse

    from morphst._utils._stats import pearson_columns
    from morphst.tl._quadrants._genes import _pcc_null

    rng = np.random.default_rng(3)
    n, g = 5000, 6
    expr = rng.gamma(2.0, size=(n, g)).astype(np.float32)
    pred = (0.3 * expr + rng.normal(size=(n, g))).astype(np.float32)
    pred[:, 2] = 1.5  # a constant predictor never scores
    groups = [np.arange(0, 3000), np.arange(3000, n)]
    pred[3000:, 4] = np.nan  # gene 4 not predicted in the second group
    pred_in, expr_in = pred.copy(), expr.copy()
    got = _null_draws(pred, expr, groups, g, range(3), block=700)  # blocks that do not divide the groups
    assert len(got) == 3
    for s, r in enumerate(got):
        rng_ = np.random.default_rng(s)
        want = []
        for idx in groups:
            ok = np.isfinite(pred[idx]).all(axis=0)
            r_g = np.full(g, np.nan)
            r_g[ok] = pearson_columns(pred[idx][:, ok], expr[rng_.permutation(idx)][:, ok])
            want.append(r_g)
        want = np.nanmean(np.vstack(want), axis=0)
        np.testing.assert_allclose(r, want, rtol=1e-6, atol=1e-7)
        assert np.isnan(r[2])
        assert np.isfinite(r[4])
    assert np.abs(np.array(got)[:, [0, 1, 3, 5]]).max() < 0.1  # shuffled: near 0
    # recording a draw leaves the generator where shuffling each group leaves it (the relevance null draws next)
    record, _ = _pcc_null(pred, expr, groups, g)
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    record(a)
    for idx in groups:
        b.permutation(idx)
    assert a.integers(1 << 62) == b.integers(1 << 62)
    # cut from whole layers (other genes around, dense or sparse, predictions and observations): the same draws
    layer = np.column_stack([rng.normal(size=(n, 2)), pred[:, ::-1]]).astype(np.float32)
    cols = np.array([7, 6, 5, 4, 3, 2])
    obs_layer = np.column_stack([expr[:, ::-1], rng.normal(size=(n, 3))]).astype(np.float32)
    obs_cols = np.array([5, 4, 3, 2, 1, 0])
    for lay in (layer, sparse.csr_matrix(np.nan_to_num(layer, nan=0.0))):
        want_lay = np.nan_to_num(pred, nan=0.0) if sparse.issparse(lay) else pred
        ref = _null_draws(want_lay, expr, groups, g, [5], block=700)
        cut = _null_draws(lay, expr, groups, g, [5], gene_idx=cols, block=700)
        np.testing.assert_array_equal(cut, ref)
        for obs in (obs_layer, sparse.csr_matrix(obs_layer)):
            both = _null_draws(lay, obs, groups, g, [5], gene_idx=cols, observed_idx=obs_cols, block=700)
            np.testing.assert_array_equal(both, ref)
    # the predictions are standardised in place only in the function's own copy: the inputs are left as they were
    np.testing.assert_array_equal(pred, pred_in)
    np.testing.assert_array_equal(expr, expr_in)
    # float64 predictions (standardised into a new float32 array) give the float32 path's draws
    r64 = _null_draws(pred.astype(np.float64), expr, groups, g, [0], block=700)
    np.testing.assert_allclose(r64[0], got[0], rtol=1e-6, atol=1e-7)
    # no group of 3 or more: nothing recorded, no draw
    assert _null_draws(pred, expr, [np.arange(2)], g, range(2)) == []


def test_pl_quadrants_labels_cover_no_point(toy):
    """The quadrant labels sit in strips above and below the data: no point lies under a label's box."""
    import matplotlib.pyplot as plt

    adata = toy.copy()
    fig = mst.pl.quadrants(adata, return_fig=True)
    (a,) = [x for x in fig.axes if x.collections]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in a.texts]
    assert len(boxes) == len(adata.uns["quadrants"]["shares"])
    pts = np.vstack([a.transData.transform(c.get_offsets()) for c in a.collections if len(c.get_offsets())])
    for b in boxes:
        inside = (pts[:, 0] >= b.x0) & (pts[:, 0] <= b.x1) & (pts[:, 1] >= b.y0) & (pts[:, 1] <= b.y1)
        assert not inside.any()
    # and relevance ticks stay non-negative although the axis runs below 0 for the lower labels
    assert min(a.get_yticks()) >= 0
    assert a.get_ylim()[0] < 0
    plt.close(fig)
