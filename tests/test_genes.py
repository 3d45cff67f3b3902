"""mst.pp.select_genes and mst.pp.normalize: statistics on the masked spots only, agreement with scanpy."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import morphst as mst


def make_counts(n_obs=200, n_vars=300, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.gamma(0.6, 3.0, size=n_vars)
    depth = rng.uniform(0.5, 2.0, size=n_obs)
    x = rng.poisson(np.outer(depth, mu)).astype(np.float32)
    obs = pd.DataFrame(
        {"section": pd.Categorical(np.repeat(["A", "B"], n_obs // 2))}, index=[f"s{i}" for i in range(n_obs)]
    )
    a = ad.AnnData(sparse.csr_matrix(x), obs=obs)
    a.var_names = [f"g{j}" for j in range(n_vars)]
    return a


def test_normalize_equals_hand_computation():
    a = make_counts()
    x = a.X.toarray()
    mst.pp.normalize(a)
    want = np.log1p(x / x.sum(axis=1, keepdims=True) * 1e4)
    got = a.layers["log1p_cp10k"]
    got = got.toarray() if sparse.issparse(got) else got
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a.X.toarray(), x)  # X untouched
    assert a.uns["log1p_cp10k"]["params"]["target_sum"] == 1e4


def test_normalize_rejects_log_values():
    a = make_counts()
    a.layers["neg"] = a.X.toarray() - 1
    with pytest.raises(ValueError, match="negative"):
        mst.pp.normalize(a, layer="neg")
    assert "log1p_cp10k" not in a.layers


def test_gene_varying_only_outside_mask_is_never_selected():
    a = make_counts()
    x = a.X.toarray()
    test = (a.obs["section"] == "B").to_numpy()
    rng = np.random.default_rng(1)
    x[~test, 7] = 0  # absent from the training spots ...
    x[test, 7] = rng.choice([0, 500], size=test.sum())  # ... and the most variable gene among the test spots
    x[~test, 8] = 3  # constant in training, wildly variable in test
    x[test, 8] = rng.choice([0, 800], size=test.sum())
    a.X = sparse.csr_matrix(x)
    for hvg in ("pearson_residuals", "seurat", "cell_ranger"):
        mst.pp.select_genes(a, 20, hvg_flavor=hvg, mask=~test)
        assert a.var["morph_target"].sum() == 20
        assert not a.var.loc["g7", "morph_target"], hvg
        assert not a.var.loc["g8", "morph_target"], hvg
    # with all spots the planted genes dominate: the test shows the mask matters
    mst.pp.select_genes(a, 20, mask=None)
    assert a.var.loc["g7", "morph_target"]
    assert a.var.loc["g8", "morph_target"]


def test_mask_equals_subsetting_and_scanpy():
    a = make_counts()
    m = (a.obs["section"] == "A").to_numpy()
    mst.pp.select_genes(a, 25, mask=m, min_fraction=0.0)
    sub = a[m].copy()
    keep = np.asarray((sub.X > 0).sum(axis=0)).ravel() > 0
    ref = sc.experimental.pp.highly_variable_genes(
        sub[:, keep].copy(), flavor="pearson_residuals", n_top_genes=25, inplace=False
    )
    want = set(sub.var_names[keep][ref["highly_variable"].to_numpy()])
    assert set(a.var_names[a.var["morph_target"]]) == want
    # same result from an obs column mask and from integer positions
    a.obs["train"] = m
    mst.pp.select_genes(a, 25, mask="train", min_fraction=0.0, key_added="by_col")
    mst.pp.select_genes(a, 25, mask=np.flatnonzero(m), min_fraction=0.0, key_added="by_pos")
    np.testing.assert_array_equal(a.var["by_col"], a.var["morph_target"])
    np.testing.assert_array_equal(a.var["by_pos"], a.var["morph_target"])
    assert a.uns["morph_target"]["params"]["n_spots"] == m.sum()


def test_seurat_flavour_matches_scanpy():
    a = make_counts()
    mst.pp.normalize(a)
    mst.pp.select_genes(a, 30, hvg_flavor="seurat", min_fraction=0.0)
    keep = np.asarray((a.X > 0).sum(axis=0)).ravel() > 0
    tmp = ad.AnnData(a.layers["log1p_cp10k"][:, keep].copy())
    df = sc.pp.highly_variable_genes(tmp, flavor="seurat", n_top_genes=30, inplace=False)
    want = set(a.var_names[keep][df["highly_variable"].to_numpy()])
    assert set(a.var_names[a.var["morph_target"]]) == want


def test_mean_flavour_and_min_fraction():
    a = make_counts()
    mst.pp.normalize(a)
    logv = a.layers["log1p_cp10k"].toarray()
    mst.pp.select_genes(a, 10, method="mean")
    want = np.argsort(-logv.mean(axis=0), kind="stable")[:10]
    assert set(np.flatnonzero(a.var["morph_target"])) == set(want)
    detected = (logv > 0).mean(axis=0) >= 0.1
    np.testing.assert_allclose(a.var["morph_target_score"][detected], logv.mean(axis=0)[detected], rtol=1e-5)
    assert np.isnan(a.var["morph_target_score"][~detected]).all()
    # a gene detected in 5% of spots is dropped by the 10% filter, however high it is there
    x = a.X.toarray()
    x[:, 3] = 0
    x[:10, 3] = 100_000
    a.X = sparse.csr_matrix(x)
    del a.layers["log1p_cp10k"]
    mst.pp.select_genes(a, 10, method="mean", min_fraction=0.1)
    assert np.isnan(a.var.loc["g3", "morph_target_score"])
    mst.pp.select_genes(a, 10, method="mean", min_fraction=0.0)
    assert np.isfinite(a.var.loc["g3", "morph_target_score"])


def test_list_flavour_and_errors():
    a = make_counts()
    mst.pp.select_genes(a, method=["g1", "g5"])
    assert list(a.var_names[a.var["morph_target"]]) == ["g1", "g5"]
    before = a.var.copy()
    with pytest.raises(KeyError, match="not in"):
        mst.pp.select_genes(a, method=["g1", "nope"], key_added="x")
    with pytest.raises(KeyError, match="Available layers"):
        mst.pp.select_genes(a, hvg_flavor="seurat", layer="nope", key_added="x")
    with pytest.raises(KeyError, match="Available columns"):
        mst.pp.select_genes(a, mask="nope", key_added="x")
    with pytest.raises(ValueError, match="n_top_genes"):
        mst.pp.select_genes(a, 0, key_added="x")
    with pytest.raises(ValueError, match="hvg_flavor"):
        mst.pp.select_genes(a, hvg_flavor="nope", key_added="x")
    pd.testing.assert_frame_equal(a.var, before)
    assert "x" not in a.uns


def test_copy_returns_new_object():
    a = make_counts()
    b = mst.pp.select_genes(a, 5, copy=True)
    assert "morph_target" not in a.var
    assert b.var["morph_target"].sum() == 5


def test_her2st_train_fold_selection(her2st_adata):
    a = her2st_adata.copy()
    test = (a.obs["section"] == "C2").to_numpy()
    mst.pp.select_genes(a, 50, mask=~test)
    genes = set(a.var_names[a.var["morph_target"]])
    assert len(genes) == 50
    # the tissue-structure genes of HER2+ breast cancer are found (immunoglobulins, collagen, HLA class II)
    assert {"IGKC", "COL1A1", "HLA-DRA"} <= genes
    # statistics on C3-C6 only: identical to selecting on the subset
    sub = a[~test].copy()
    mst.pp.select_genes(sub, 50)
    assert set(sub.var_names[sub.var["morph_target"]]) == genes


# ------------------------------------------------------------------------------------------------------------------
# issue 10: expression inputs and parameters are checked up front (right value, or a clear error and no write)
# ------------------------------------------------------------------------------------------------------------------
def _log_normalised(a):
    b = a.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    return b


def test_normalize_refuses_log_normalised_x_and_names_layer():
    a = make_counts()
    raw = a.X.copy()
    b = _log_normalised(a)
    b.layers["counts"] = raw
    with pytest.raises(ValueError, match=r"uns\['log1p'\].*`layer=`"):
        mst.pp.normalize(b)
    assert "log1p_cp10k" not in b.layers
    # non-integer values without the uns flag (e.g. read from a file that dropped uns)
    del b.uns["log1p"]
    with pytest.raises(ValueError, match=r"non-integer values .*`layer=`"):
        mst.pp.normalize(b)
    assert "log1p_cp10k" not in b.layers
    assert "log1p_cp10k" not in b.uns
    # integer X but flagged log-transformed by scanpy: refused too
    c = make_counts()
    c.uns["log1p"] = {"base": None}
    with pytest.raises(ValueError, match="log-transform twice"):
        mst.pp.normalize(c)
    # the fix named in the message gives the right values
    mst.pp.normalize(b, layer="counts")
    x = raw.toarray()
    want = np.log1p(x / x.sum(axis=1, keepdims=True) * 1e4)
    np.testing.assert_allclose(b.layers["log1p_cp10k"].toarray(), want, rtol=1e-5, atol=1e-5)


def test_select_genes_refuses_log_x_for_pearson_residuals_and_log1p():
    a = _log_normalised(make_counts())
    with pytest.raises(ValueError, match="Pearson residuals need raw counts"):
        mst.pp.select_genes(a, 10)
    with pytest.raises(ValueError, match="`layer=`"):
        mst.pp.select_genes(a, 10, hvg_flavor="seurat")
    assert "morph_target" not in a.var
    # log-normalised X named as the layer: used as it is, equal to scanpy's seurat HVGs on it
    a.layers["lognorm"] = a.X.copy()
    mst.pp.select_genes(a, 10, hvg_flavor="seurat", layer="lognorm", min_fraction=0.0)
    keep = np.asarray((a.X > 0).sum(axis=0)).ravel() > 0
    df = sc.pp.highly_variable_genes(ad.AnnData(a.X[:, keep].copy()), flavor="seurat", n_top_genes=10, inplace=False)
    assert set(a.var_names[a.var["morph_target"]]) == set(a.var_names[keep][df["highly_variable"].to_numpy()])


@pytest.mark.parametrize("target_sum", [0, -1.0, float("nan"), float("inf"), "1e4"])
def test_normalize_target_sum_must_be_positive(target_sum):
    a = make_counts()
    with pytest.raises(ValueError, match="`target_sum` must be a positive number"):
        mst.pp.normalize(a, target_sum=target_sum)
    assert "log1p_cp10k" not in a.layers


def test_normalize_other_target_sum_is_right():
    a = make_counts()
    mst.pp.normalize(a, target_sum=1e6)
    x = a.X.toarray()
    np.testing.assert_allclose(
        a.layers["log1p_cp10k"].toarray(), np.log1p(x / x.sum(1, keepdims=True) * 1e6), rtol=1e-5, atol=1e-5
    )
    assert a.uns["log1p_cp10k"]["params"]["target_sum"] == 1e6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_fraction": -0.1}, "`min_fraction` must be a fraction of spots in \\[0, 1\\]"),
        ({"min_fraction": 1.5}, "`min_fraction` must be a fraction of spots in \\[0, 1\\]"),
        ({"min_fraction": float("nan")}, "`min_fraction`"),
        ({"n_top_genes": 0}, "`n_top_genes` must be a positive integer"),
        ({"n_top_genes": -3}, "`n_top_genes` must be a positive integer"),
        ({"n_top_genes": 2.5}, "`n_top_genes` must be a positive integer"),
        ({"method": []}, "empty list"),
        ({"mask": np.array([0, 5, 999])}, "positions must lie in"),
        ({"mask": np.array([0.5, 1.5])}, "boolean or integer positions"),
    ],
)
def test_select_genes_bad_parameters(kwargs, match):
    a = make_counts()
    kw = {"n_top_genes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        mst.pp.select_genes(a, kw.pop("n_top_genes"), **kw)
    assert "morph_target" not in a.var
    assert "morph_target" not in a.uns


def test_select_genes_min_fraction_one_and_zero_genes():
    a = make_counts()
    x = a.X.toarray()
    detected_everywhere = (x > 0).all(axis=0)
    assert 0 < detected_everywhere.sum() < 20
    # min_fraction=1 is valid: only genes detected in every spot can be chosen; fewer than asked -> a warning
    with pytest.warns(UserWarning, match=f"only {detected_everywhere.sum()} of the 20 genes"):
        mst.pp.select_genes(a, 20, method="mean", min_fraction=1.0)
    np.testing.assert_array_equal(a.var["morph_target"].to_numpy(), detected_everywhere)
    assert a.uns["morph_target"]["params"]["n_selected"] == detected_everywhere.sum()
    # no gene detected in every spot: a clear error, nothing written
    x[0, :] = 0
    x[0, 0] = 1
    x[1, 0] = 0
    b = ad.AnnData(sparse.csr_matrix(x), obs=a.obs.copy())
    b.var_names = a.var_names
    with pytest.raises(ValueError, match=r"No gene can be selected.*min_fraction"):
        mst.pp.select_genes(b, 10, min_fraction=1.0)
    assert "morph_target" not in b.var


def test_duplicated_var_names_are_refused_up_front():
    a = make_counts()
    names = list(a.var_names)
    names[5] = names[3] = "DUP"
    a.var_names = names
    with pytest.raises(ValueError, match=r"1 duplicated gene name.*'DUP'.*adata.var_names_make_unique\(\)"):
        mst.pp.select_genes(a, method=["DUP", "g1"])
    with pytest.raises(ValueError, match="var_names_make_unique"):
        mst.pp.select_genes(a, 10)
    assert "morph_target" not in a.var
    a.var_names_make_unique()
    mst.pp.select_genes(a, method=["DUP", "g1"])
    assert list(a.var_names[a.var["morph_target"]]) == ["g1", "DUP"]


@pytest.mark.parametrize("key_added", [None, ""])
def test_normalize_key_added_must_name_a_layer(key_added):
    a = make_counts()
    with pytest.raises(ValueError, match="`key_added` must be a non-empty string"):
        mst.pp.normalize(a, key_added=key_added)
    assert len(a.layers) == 0


def test_expression_functions_refuse_empty_axes_and_backed_anndata(tmp_path):
    """Raw library errors before (e.g. ``ufunc 'isfinite' not supported`` for a backed AnnData) become clear ones."""
    rng = np.random.default_rng(0)
    a = ad.AnnData(rng.poisson(3, (20, 30)).astype(np.float32))
    a.var_names = [f"g{i}" for i in range(30)]
    for fn in (mst.pp.normalize, mst.pp.select_genes):
        with pytest.raises(ValueError, match="20 spots and 0 genes"):
            fn(a[:, []].copy())
        with pytest.raises(ValueError, match="0 spots and 30 genes"):
            fn(a[[]].copy())
    a.write_h5ad(tmp_path / "b.h5ad")
    b = ad.read_h5ad(tmp_path / "b.h5ad", backed="r")
    for fn in (mst.pp.normalize, mst.pp.select_genes):
        with pytest.raises(ValueError, match=r"backed mode .*adata\.to_memory\(\)"):
            fn(b)
    assert "log1p_cp10k" not in b.layers
    # in memory, the same values work: cp10k + log1p equals the hand computation
    c = b.to_memory()
    mst.pp.normalize(c)
    x = np.asarray(a.X, float)
    np.testing.assert_allclose(
        np.asarray(
            c.layers["log1p_cp10k"].todense() if sparse.issparse(c.layers["log1p_cp10k"]) else c.layers["log1p_cp10k"]
        ),
        np.log1p(x / x.sum(1, keepdims=True) * 1e4),
        rtol=1e-5,
    )


def test_gene_selection_holds_the_defaults_of_select_genes_and_reruns_them():
    import inspect

    a = make_counts()
    rule = mst.pp.GeneSelection()
    sig = inspect.signature(mst.pp.select_genes).parameters
    for name in ("n_top_genes", "method", "hvg_flavor", "min_fraction", "layer"):
        assert sig[name].default == getattr(rule, name)
    mst.pp.select_genes(a, 20, mask=np.arange(100))
    stored = mst.pp.GeneSelection.from_params(a.uns["morph_target"]["params"], "morph_target")
    assert stored == mst.pp.GeneSelection(n_top_genes=20)
    score, sel = stored.select(stored.values(a)[:100], a.var_names)
    np.testing.assert_array_equal(sel, a.var["morph_target"].to_numpy())
    np.testing.assert_allclose(score, a.var["morph_target_score"].to_numpy(), equal_nan=True)
    with pytest.raises(ValueError, match=r"stored in `adata.uns\['k'\]\['params'\]` is invalid.*hvg_flavor"):
        mst.pp.GeneSelection.from_params({"hvg_flavor": "nope"}, "k")
