"""mst.tl.predict_expression / fit_translator: honest cross-validation, output contract, real-data signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import morphst as mst
from morphst.tl._translation._features import neighbour_mean


@pytest.fixture
def tdata(spatial_table):
    """4 sections of 8 x 8 spots (200 µm apart), 12 features, 40 genes: g0-g9 follow the features (conftest)."""
    return spatial_table()


def test_output_contract(tdata):
    a = tdata
    mst.tl.predict_expression(a, "X_feat", genes=[f"g{j}" for j in range(15)])
    n, g = a.shape
    p = a.layers["predicted"]
    assert p.shape == (n, g)
    assert p.dtype == np.float32
    mask = a.var["predicted_mask"].to_numpy()
    assert mask.sum() == 15
    assert np.isfinite(p[:, mask]).all()
    assert np.isnan(p[:, ~mask]).all()
    fold = a.obs["predicted_fold"]
    assert isinstance(fold.dtype, pd.CategoricalDtype)
    assert (fold.astype(str) == a.obs["section"].astype(str)).all()  # fold = held-out section
    for m in ("pcc", "mae", "mse", "rmse"):
        col = a.var[f"predicted_{m}"]
        assert col[mask].notna().all()
        assert col[~mask].isna().all()
    fm = a.uns["predicted"]["fold_metrics"]
    assert list(fm.columns) == ["fold", "gene", "pcc", "mae", "mse", "rmse", "n_test", "constant_in_test"]
    assert len(fm) == 4 * 15
    pf = a.uns["predicted"]["per_fold"]
    assert list(pf["fold"]) == ["S0", "S1", "S2", "S3"]
    assert {"pcc", "n_excluded", "n_constant_in_test", "mse_train_mean", "alpha"} <= set(pf.columns)
    assert a.uns["predicted"]["params"]["target"] == "log1p_cp10k"
    # the observed target is stored on the same scale
    obs = a.layers["log1p_cp10k"]
    x = a.X.toarray()
    np.testing.assert_allclose(obs.toarray(), np.log1p(x / x.sum(1, keepdims=True) * 1e4), rtol=1e-5, atol=1e-5)
    # per-gene metrics are the fold means; the per-fold PCC is the gene mean, both recomputed from the layer
    g0 = "g0"
    j = list(a.var_names).index(g0)
    rs = []
    for s in ["S0", "S1", "S2", "S3"]:
        rows = (a.obs["section"] == s).to_numpy()
        rs.append(np.corrcoef(obs[rows][:, j].toarray().ravel(), p[rows, j])[0, 1])
    assert a.var.loc[g0, "predicted_pcc"] == pytest.approx(np.mean(rs), rel=1e-5)
    assert fm.loc[(fm["fold"] == "S0")]["pcc"].mean() == pytest.approx(pf.loc[0, "pcc"], rel=1e-9)
    # real signal: genes 0-9 follow the features, the others do not
    assert a.var.loc[[f"g{j}" for j in range(10)], "predicted_pcc"].mean() > 0.5
    assert abs(a.var.loc[[f"g{j}" for j in range(10, 15)], "predicted_pcc"].mean()) < 0.2
    # ... and the model beats the training-mean predictor on MSE in every fold
    assert (pf["mse"] < pf["mse_train_mean"]).all()


def test_matches_sklearn_pipeline_for_one_fold(tdata):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a = tdata
    genes = ["g0", "g3", "g12"]
    mst.tl.predict_expression(a, "X_feat", genes=genes)
    test = (a.obs["section"] == "S2").to_numpy()
    y = mst.pp._normalize.log1p_cp10k(a.X).toarray()[:, [0, 3, 12]]
    groups = a.obs["section"].to_numpy()[~test]
    splits = list(GroupKFold(n_splits=3).split(np.zeros((~test).sum()), groups=groups))
    alphas = list(np.logspace(-1, 6, 15))
    ref = make_pipeline(StandardScaler(), PCA(n_components=12, random_state=0), RidgeCV(alphas=alphas, cv=splits)).fit(
        a.obsm["X_feat"][~test], y[~test]
    )
    want = ref.predict(a.obsm["X_feat"][test])
    got = a.layers["predicted"][test][:, [0, 3, 12]]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert a.uns["predicted"]["per_fold"].loc[2, "alpha"] == pytest.approx(ref[-1].alpha_)


def test_in_fold_selection_never_sees_the_test_section(tdata):
    a = tdata
    x = a.X.toarray()
    s3 = (a.obs["section"] == "S3").to_numpy()
    rng = np.random.default_rng(5)
    x[~s3, 30] = 0  # gene 30: absent outside S3, wildly variable inside it
    x[s3, 30] = rng.choice([0, 5000], size=s3.sum())
    a.X = sparse.csr_matrix(x)
    mst.pp.select_genes(a, 10)  # on all spots (leaky): g30 is selected
    assert a.var.loc["g30", "morph_target"]
    mst.tl.predict_expression(a, "X_feat", select_on_train=True)
    fm = a.uns["predicted"]["fold_metrics"]
    assert fm.groupby("fold", observed=True).size().eq(10).all()
    assert "g30" not in set(fm.loc[fm["fold"] == "S3", "gene"])
    j = list(a.var_names).index("g30")
    assert np.isnan(a.layers["predicted"][s3, j]).all()
    # every fold's genes are what select_genes picks on that fold's training spots
    for s in ["S0", "S1", "S2", "S3"]:
        train = (a.obs["section"] != s).to_numpy()
        b = mst.pp.select_genes(a, 10, mask=train, copy=True)
        assert set(fm.loc[fm["fold"] == s, "gene"]) == set(b.var_names[b.var["morph_target"]])
    # leaky variant: the same (all-spot) genes in every fold
    mst.tl.predict_expression(a, "X_feat", select_on_train=False, key_added="leaky")
    fl = a.uns["leaky"]["fold_metrics"]
    assert "g30" in set(fl.loc[fl["fold"] == "S3", "gene"])


def test_user_gene_column_is_used_as_is(tdata):
    a = tdata
    a.var["mine"] = a.var_names.isin(["g2", "g11"])
    mst.tl.predict_expression(a, "X_feat", genes="mine")  # select_on_train=True, but no select_genes params
    fm = a.uns["predicted"]["fold_metrics"]
    assert set(fm["gene"]) == {"g2", "g11"}
    assert fm.groupby("fold", observed=True).size().eq(2).all()
    # the default key without a column: 50 (here: all 40 minus undetected) genes re-selected per fold
    mst.tl.predict_expression(a, "X_feat", key_added="auto")
    assert a.uns["auto"]["params"]["select_on_train"]
    assert a.uns["auto"]["params"]["gene_selection"]["n_top_genes"] == 50


@pytest.mark.parametrize("cv", ["leave_one_group_out", "kfold", "spatial_block", "group_kfold"])
def test_folds_partition_and_never_share_a_section(tdata, cv):
    from sklearn.model_selection import GroupKFold

    a = tdata
    splitter = GroupKFold(n_splits=2) if cv == "group_kfold" else cv
    mst.tl.predict_expression(a, "X_feat", genes=["g0", "g1"], cv=splitter, n_splits=4)
    fold = a.obs["predicted_fold"]
    assert fold.notna().all()  # every spot held out exactly once
    assert np.isfinite(a.layers["predicted"][:, :2]).all()
    pf = a.uns["predicted"]["per_fold"]
    assert pf["n_test"].sum() == a.n_obs
    if cv in ("leave_one_group_out", "group_kfold"):
        # no section is split between a fold's test set and its training set
        ct = pd.crosstab(a.obs["section"], fold)
        assert ((ct > 0).sum(axis=1) == 1).all()
    if cv == "spatial_block":
        # each block is a contiguous strip of every section: 16 spots per section, 2 grid columns/rows wide
        for s in ["S0", "S1"]:
            rows = (a.obs["section"] == s).to_numpy()
            xy = a.obsm["spatial"][rows]
            for f in fold.cat.categories:
                sel = (fold[rows] == f).to_numpy()
                assert sel.sum() == 16
                span = np.ptp(xy[sel], axis=0)
                assert min(span) <= 200.0


def test_train_test_split(tdata):
    a = tdata
    a.obs["train"] = (a.obs["section"] != "S1").to_numpy()
    mst.tl.predict_expression(a, "X_feat", genes=["g0", "g1"], cv="train_test")
    held = (a.obs["predicted_fold"] == "test").to_numpy()
    np.testing.assert_array_equal(held, ~a.obs["train"].to_numpy())
    assert np.isnan(a.layers["predicted"][~held][:, :2]).all()
    assert np.isfinite(a.layers["predicted"][held][:, :2]).all()


def test_neighbour_mean_matches_brute_force(tdata):
    a = tdata
    x = a.obsm["X_feat"]
    xy = a.obsm["spatial"]
    groups = a.obs["section"].to_numpy(object)
    ctx, w = neighbour_mean(x, xy, 4, groups)
    assert sparse.issparse(w)
    assert w.nnz == 4 * a.n_obs
    i = 9  # interior spot of S0 at grid (1, 1): its 4 neighbours are the adjacent grid spots
    d = np.linalg.norm(xy - xy[i], axis=1)
    d[groups != groups[i]] = np.inf
    d[i] = np.inf
    nb = np.flatnonzero(np.isclose(d, 200.0))
    assert len(nb) == 4
    np.testing.assert_allclose(ctx[i], x[nb].mean(axis=0), rtol=1e-5)
    # neighbours never cross sections, although every section has spots at the same coordinates
    rows, cols = w.nonzero()
    assert (groups[rows] == groups[cols]).all()


def test_spatial_context_adds_features(tdata):
    a = tdata
    mst.tl.predict_expression(a, "X_feat", genes=["g0"], spatial_context=4)
    assert a.uns["predicted"]["params"]["n_features"] == 24
    assert a.uns["predicted"]["params"]["spatial_context"] == 4


def test_log_names_own_and_neighbour_features_and_the_average(tdata, morphst_log):
    a = tdata
    mst.tl.predict_expression(a, "X_feat", genes=["g0", "g1"], spatial_context=4)
    first = next(m for m in morphst_log.messages if m.startswith("predicting expression"))
    last = morphst_log.messages[-1]
    assert "(12 own + 12 neighbour-mean (k=4) features)" in first
    # the finished line says which average it reports and reports exactly that one
    pf = a.uns["predicted"]["per_fold"]
    expected = f"mean PCC over folds (each the mean over that fold's genes) {pf['pcc'].mean():.3f} over 4 folds"
    assert expected in last
    morphst_log.clear()
    mst.tl.predict_expression(a, "X_feat", genes=["g0"])
    assert "(12 features)" in next(m for m in morphst_log.messages if m.startswith("predicting expression"))


def test_folds_bar_ends_its_line_when_not_a_terminal(tdata, capsys, monkeypatch):
    # captured stderr is not a tty (like a log file or CI): the bar must end with a newline, not with a "\r" that
    # lets the next log line overwrite it on the same line
    monkeypatch.setattr(mst.settings, "progress_bar", True)
    mst.tl.predict_expression(tdata, "X_feat", genes=["g0"])
    err = capsys.readouterr().err
    assert "folds: 100%" in err
    assert err.endswith("\n")
    assert not err.rstrip("\n").endswith("\r")


def test_models_mlp_and_custom(tdata):
    from sklearn.linear_model import Ridge
    from sklearn.svm import SVR

    a = tdata
    genes = ["g0", "g1", "g2"]
    mst.tl.predict_expression(a, "X_feat", genes=genes, model=Ridge(alpha=1.0), key_added="r")
    mst.tl.predict_expression(a, "X_feat", genes=genes, model=SVR(), key_added="svr")  # single-output
    mst.tl.predict_expression(a, "X_feat", genes=genes, model="mlp", key_added="mlp")
    for k in ("r", "svr", "mlp"):
        assert a.var.loc[genes, f"{k}_pcc"].mean() > 0.3, k


@pytest.mark.filterwarnings("ignore:The groups parameter is ignored")
def test_bad_input_leaves_data_unchanged(tdata):
    a = tdata
    before = a.copy()
    with pytest.raises(KeyError, match="embed_patches"):
        mst.tl.predict_expression(a, "X_nope")
    with pytest.raises(ValueError, match="Unknown `cv`"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0"], cv="nope")
    with pytest.raises(ValueError, match="Unknown `regressor`"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0"], model="nope")
    with pytest.raises(KeyError, match="Available layers"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0"], target="nope")
    with pytest.raises(KeyError, match="select_genes"):
        mst.tl.predict_expression(a, "X_feat", genes="nope", select_on_train=False)
    with pytest.raises(KeyError, match="train"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0"], cv="train_test")
    with pytest.raises(ValueError, match="spatial_context"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0"], spatial_context=-1)
    from sklearn.model_selection import ShuffleSplit

    with pytest.raises(ValueError, match="disjoint"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0"], cv=ShuffleSplit(n_splits=3, random_state=0))
    a.obsm["X_nan"] = a.obsm["X_feat"].copy()
    a.obsm["X_nan"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mst.tl.predict_expression(a, "X_nan", genes=["g0"])
    del a.obsm["X_nan"]
    assert set(a.layers.keys()) == set(before.layers.keys())
    assert list(a.obs.columns) == list(before.obs.columns)
    assert list(a.var.columns) == list(before.var.columns)
    assert set(a.uns.keys()) == set(before.uns.keys())


def test_translator_reproduces_out_of_fold_and_roundtrips(tdata, tmp_path):
    a = tdata
    mst.pp.select_genes(a, 8)
    mst.tl.predict_expression(a, "X_feat", spatial_context=4)
    test = (a.obs["section"] == "S1").to_numpy()
    tr = mst.tl.fit_translator(a, "X_feat", train=["S0", "S2", "S3"], spatial_context=4)
    fm = a.uns["predicted"]["fold_metrics"]
    assert set(tr.genes) == set(fm.loc[fm["fold"] == "S1", "gene"])
    new = a[test].copy()
    del new.layers["predicted"]
    got = tr.predict(new)
    cols = [list(a.var_names).index(g) for g in tr.genes]
    np.testing.assert_allclose(got, a.layers["predicted"][test][:, cols], rtol=1e-5, atol=1e-5)
    path = tmp_path / "translator.morphst"
    tr.save(path)
    tr2 = mst.tl.Translator.load(path)
    np.testing.assert_array_equal(tr2.predict(new), got)
    out = tr2.predict_adata(new)
    assert list(out.var_names) == tr.genes
    assert out.shape == (test.sum(), 8)


# ------------------------------------------------------------------------------------------------------------------
# real data (HER2ST C2-C6 with DenseNet-121 / EfficientNet-Lite0 features, fixture from tests/conftest.py)
# ------------------------------------------------------------------------------------------------------------------
def test_her2st_densenet_beats_training_mean(her2st_embedded):
    a = her2st_embedded.copy()
    mst.tl.predict_expression(a, "X_densenet121")
    pf = a.uns["predicted"]["per_fold"]
    assert len(pf) == 5
    assert (pf["n_genes"] == 50).all()
    # the training-mean predictor is constant: its PCC is undefined (counts as 0) and its MSE is the benchmark
    assert pf["pcc"].mean() > 0.1
    assert (pf["pcc"] > 0).all()
    assert (pf["mse"] < pf["mse_train_mean"]).mean() >= 0.8


def test_her2st_translator_on_section_without_table(her2st_embedded):
    """A translator fit on C2, C4–C6 and applied to C3 loaded without its table reproduces C3's out-of-fold
    predictions (patches cut and embedded again from the image alone)."""
    a = her2st_embedded.copy()
    rep = "X_efficientnet_lite0"
    mst.tl.predict_expression(a, rep)
    tr = mst.tl.fit_translator(a, rep, train=["C2", "C4", "C5", "C6"])
    fm = a.uns["predicted"]["fold_metrics"]
    assert set(tr.genes) == set(fm.loc[fm["fold"] == "C3", "gene"])
    assert tr.embed_params["model"] == "efficientnet_lite0"

    sd = mst.datasets.her2st(library_id=("C3",))
    del sd.tables["table"]
    tr.predict_sdata(sd, shapes_key="C3_spots")
    t = sd.tables["morph_predicted"]
    assert t.shape == (180, 50)
    c3 = (a.obs["section"] == "C3").to_numpy()
    oof = pd.DataFrame(
        a.layers["predicted"][c3][:, [list(a.var_names).index(g) for g in tr.genes]],
        index=a.obs.loc[c3, "instance_id"].to_numpy(),
        columns=tr.genes,
    )
    new = pd.DataFrame(t.X, index=t.obs["instance_id"].to_numpy(), columns=t.var_names).loc[oof.index, tr.genes]
    # same patches, same encoder, same model: equal up to the bf16 autocast of the encoder
    np.testing.assert_allclose(new.to_numpy(), oof.to_numpy(), atol=0.05)
    assert np.corrcoef(new.to_numpy().ravel(), oof.to_numpy().ravel())[0, 1] > 0.999

    # the applicability map over the H&E (as tutorial 01 draws it): one panel per shapes element, the drawn values
    # are the scores, the title the verdict (a held-out section of the training patient: in domain)
    fig = mst.pl.applicability(sd, return_fig=True)
    (ax,) = [a_ for a_ in fig.axes if a_.get_title()]
    verdict = t.uns["morphst_translation"]["applicability"]["verdict"]["C3_spots"]
    assert verdict["in_domain"]
    assert ax.get_title() == f"C3_spots: in training domain\n({100 * verdict['frac_beyond']:.0f}% of spots > 1)"
    np.testing.assert_allclose(
        np.asarray(ax.collections[0].get_array(), dtype=float), t.obs["applicability_score"].to_numpy(), rtol=1e-6
    )
    assert len(ax.images) == 1  # drawn over the H&E

    # super-resolution: a 200 µm grid anchored on the spots, kept within 60 µm of a spot; grid points that fall
    # within 30 µm of a spot see nearly the same patch, so they get nearly the spot's predictions
    from sklearn.neighbors import NearestNeighbors
    from spatialdata import transform

    tr.predict_grid(sd, spacing_um=200.0, shapes_key="C3_spots", max_distance_um=60.0)
    g = sd.tables["morph_predicted_grid"]
    grid = transform(sd.shapes["C3_spots_grid"], to_coordinate_system="C3")
    spots = transform(sd.shapes["C3_spots"], to_coordinate_system="C3")
    assert len(grid) == g.n_obs > 0
    np.testing.assert_array_equal(g.obs["instance_id"].to_numpy(), np.asarray(grid.index))
    assert np.allclose(sd.shapes["C3_spots_grid"]["radius"], 100.0)
    assert np.isfinite(g.X).all()
    gxy = np.column_stack([grid.geometry.x, grid.geometry.y])
    sxy = np.column_stack([spots.geometry.x, spots.geometry.y])
    d, j = NearestNeighbors(n_neighbors=1).fit(sxy).kneighbors(gxy)
    assert d.max() <= 60.0 + 1e-6
    near = d[:, 0] < 30.0
    assert near.sum() >= 20
    spot_pred = pd.DataFrame(t.X, index=t.obs["instance_id"].to_numpy()).loc[np.asarray(spots.index)[j[near, 0]]]
    assert np.corrcoef(g.X[near].ravel(), spot_pred.to_numpy().ravel())[0, 1] > 0.95


# ------------------------------------------------------------------------------------------------------------------
# issue 10: users' own data -- the right value or a clear error, and nothing written on error
# ------------------------------------------------------------------------------------------------------------------
def _slots(a):
    return (set(a.layers), list(a.obs.columns), list(a.var.columns), set(a.uns))


def test_log_normalised_x_is_refused_and_target_x_predicts_it(tdata, spatial_table):
    import scanpy as sc

    a = tdata
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    before = _slots(a)
    with pytest.raises(ValueError, match=r"uns\['log1p'\].*`target=`"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0", "g1"])
    assert _slots(a) == before
    del a.uns["log1p"]
    before = _slots(a)
    with pytest.raises(ValueError, match=r"non-integer values.*`target=`"):
        mst.tl.fit_translator(a, "X_feat", genes=["g0", "g1"])
    assert _slots(a) == before
    # the fix the message names: X already holds the log-normalised target -> the same as computing it from counts
    mst.tl.predict_expression(a, "X_feat", genes=["g0", "g1"], target="X")
    b = spatial_table()
    mst.tl.predict_expression(b, "X_feat", genes=["g0", "g1"])
    np.testing.assert_allclose(a.layers["predicted"], b.layers["predicted"], rtol=1e-4, atol=1e-4)


def test_duplicated_var_names_are_refused(tdata):
    a = tdata
    names = list(a.var_names)
    names[1] = "g0"
    a.var_names = names
    before = _slots(a)
    for call in (
        lambda: mst.tl.predict_expression(a, "X_feat", genes=["g0", "g2"]),
        lambda: mst.tl.predict_expression(a, "X_feat"),
        lambda: mst.tl.fit_translator(a, "X_feat", genes=["g2"]),
    ):
        with pytest.raises(ValueError, match=r"duplicated gene name.*'g0'.*var_names_make_unique\(\)"):
            call()
    assert _slots(a) == before
    a.var_names_make_unique()
    mst.tl.predict_expression(a, "X_feat", genes=["g0", "g2"])
    assert a.var["predicted_mask"].sum() == 2


def test_nan_in_groupby_is_an_error_naming_the_count(tdata):
    a = tdata
    a.obs.loc[a.obs_names[[3, 70, 71]], "section"] = np.nan
    before = _slots(a)
    with pytest.raises(ValueError, match=r"missing \(NaN\) for 3 of 256 spots.*notna\(\).*fillna\('unknown'\)"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0"])
    with pytest.raises(ValueError, match="3 of 256"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0"], cv="kfold")  # inner CV groups, neighbourhoods
    with pytest.raises(ValueError, match="3 of 256"):
        mst.tl.fit_translator(a, "X_feat", genes=["g0"])
    assert _slots(a) == before
    # dropping them, as the message says: every remaining spot is predicted
    b = a[a.obs["section"].notna()].copy()
    mst.tl.predict_expression(b, "X_feat", genes=["g0"])
    assert np.isfinite(b[:, "g0"].layers["predicted"]).all()
    assert b.obs["predicted_fold"].notna().all()


@pytest.mark.parametrize("alphas", [[], [1.0, -1.0], [0.0], [np.nan], "abc"])
def test_alphas_must_be_positive(tdata, alphas):
    a = tdata
    before = _slots(a)
    with pytest.raises(ValueError, match=r"`alphas` must be a non-empty sequence of .*positive"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0"], alphas=alphas)
    with pytest.raises(ValueError, match="`alphas`"):
        mst.tl.fit_translator(a, "X_feat", genes=["g0"], alphas=alphas)
    assert _slots(a) == before


def test_spatial_context_larger_than_every_section_is_an_error(tdata):
    a = tdata  # 4 sections of 64 spots
    before = _slots(a)
    with pytest.raises(ValueError, match="`spatial_context`=64 neighbours, but the largest section has 64 spots"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0"], spatial_context=64)
    assert _slots(a) == before
    mst.tl.predict_expression(a, "X_feat", genes=["g0"], spatial_context=63)
    assert a.uns["predicted"]["params"]["spatial_context_capped"] == {}


def test_spatial_context_capped_in_small_sections_is_recorded(tdata):
    a = tdata
    sec = a.obs["section"].astype(str).to_numpy()
    sec[[0, 1, 2]] = "tiny"  # a section of 3 spots: 2 neighbours at most
    a.obs["section"] = pd.Categorical(sec)
    with pytest.warns(UserWarning, match="too few spots for `spatial_context`=8"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0"], spatial_context=8, cv="kfold")
    assert a.uns["predicted"]["params"]["spatial_context_capped"] == {"tiny": 2}
    # the right value: their neighbour mean is the mean of the 2 other spots of the section
    ctx, w = neighbour_mean(a.obsm["X_feat"], a.obsm["spatial"], 8, a.obs["section"].to_numpy(object))
    np.testing.assert_allclose(ctx[0], a.obsm["X_feat"][[1, 2]].mean(axis=0), rtol=1e-6)
    assert w[3].nnz == 8


def test_fold_without_any_gene_fails_before_writing(tdata):
    a = tdata
    x = a.X.toarray()
    for j in range(a.n_vars):  # every gene has one zero in every section: none is detected in all training spots
        x[j::64, j] = 0
    a.X = sparse.csr_matrix(x)
    mst.pp.select_genes(a, 5, min_fraction=0.5)
    a.uns["morph_target"]["params"]["min_fraction"] = 1.0
    before = _slots(a)
    with pytest.raises(ValueError, match=r"No gene can be selected.*training spots"):
        mst.tl.predict_expression(a, "X_feat")
    assert _slots(a) == before
    a.uns["morph_target"]["params"]["min_fraction"] = 1.5
    with pytest.raises(
        ValueError, match=r"stored in `adata.uns\['morph_target'\]\['params'\]` is invalid.*min_fraction"
    ):
        mst.tl.predict_expression(a, "X_feat")
    a.uns["morph_target"]["params"]["min_fraction"] = 0.1
    a.uns["morph_target"]["params"]["n_top_genes"] = 0
    with pytest.raises(ValueError, match="n_top"):
        mst.tl.predict_expression(a, "X_feat")
    assert _slots(a) == before


# ------------------------------------------------------------------------------------------------------------------
# Translator files: versioned, checksummed, not a pickle
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def saved_translator(tdata, tmp_path):
    mst.pp.select_genes(tdata, 8)
    tr = mst.tl.fit_translator(tdata, "X_feat", train=["S0", "S2", "S3"], spatial_context=4)
    path = tmp_path / "tr.morphst"
    tr.save(path)
    return tr, path, tdata


@pytest.mark.parametrize("model", ["ridge", "mlp", "Ridge", "SVR"])
def test_translator_file_round_trip_predicts_identically(tdata, tmp_path, model):
    from sklearn.linear_model import Ridge
    from sklearn.svm import SVR

    est = {"Ridge": Ridge(alpha=3.0), "SVR": SVR()}.get(model, model)
    tr = mst.tl.fit_translator(tdata, "X_feat", genes=["g0", "g1", "g12"], train=["S0", "S1"], model=est)
    path = tmp_path / "t.bin"
    tr.save(path)
    assert path.read_bytes().startswith(b"MORPHST\x00TRANSLATOR\n")
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed
    tr2 = mst.tl.Translator.load(path)
    np.testing.assert_array_equal(tr2.predict(tdata), tr.predict(tdata))
    assert tr2.genes == tr.genes
    assert (tr2.use_rep, tr2.target, tr2.spatial_context, tr2.n_features) == (
        tr.use_rep,
        tr.target,
        tr.spatial_context,
        tr.n_features,
    )
    assert tr2.embed_params == tr.embed_params
    assert tr2.patch_params == tr.patch_params
    assert tr2.params.keys() == tr.params.keys()


@pytest.mark.parametrize("keep", [0, 10, 40, 0.5, -1])
def test_truncated_translator_file_is_a_clear_error(saved_translator, keep):
    _, path, _ = saved_translator
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    path.write_bytes(data[:n])
    with pytest.raises(ValueError, match=r"not a readable morphst translator file.*damaged or truncated"):
        mst.tl.Translator.load(path)


def test_one_flipped_byte_anywhere_is_a_clear_error(saved_translator):
    _, path, _ = saved_translator
    data = path.read_bytes()
    hlen = int.from_bytes(data[19:27], "little")
    # the signature, the header length, the JSON header (a digit of a number, a quote), the arrays, the checksum
    header = data[27 : 27 + hlen]
    positions = [0, 19, 27 + header.index(b'"n_features"') + 14, 27 + 5, 27 + hlen + 100, len(data) - 40]
    positions += [len(data) - 1, *np.random.default_rng(0).integers(0, len(data), 20).tolist()]
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match="morphst translator file") as e:
            mst.tl.Translator.load(path)
        assert "damaged" in str(e.value) or "format version" in str(e.value), (pos, str(e.value))
    path.write_bytes(data)
    mst.tl.Translator.load(path)  # the unaltered file still loads


def test_other_format_version_is_a_clear_error(saved_translator):
    import hashlib
    import json

    _, path, _ = saved_translator
    data = path.read_bytes()
    hlen = int.from_bytes(data[19:27], "little")
    header = json.loads(data[27 : 27 + hlen])
    header["format_version"] = 3
    hb = json.dumps(header).encode()
    body = data[:19] + len(hb).to_bytes(8, "little") + hb + data[27 + hlen : -32]
    path.write_bytes(body + hashlib.sha256(body).digest())  # a valid file of a future format version
    with pytest.raises(ValueError, match=r"format version 3 .*this morphst reads format versions \[1, 2\]"):
        mst.tl.Translator.load(path)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("ctx", {"spatial_context": 4, "global_context": True, "scale_per_library": True}),
        ("head", {"regressor": mst.tl.FeatureHead(max_epochs=5, patience=2, n_hidden=16, ensemble=False)}),
    ],
)
def test_format_1_translator_loads_and_predicts_as_refit(name, kw, tmp_path, spatial_table):
    """Files of format 1 (the recipe spread over attributes; the head under its former module) still load."""
    from pathlib import Path

    a = spatial_table()
    old = mst.tl.Translator.load(Path(__file__).parent / "data" / f"translator_v1_{name}.morphst")
    mst.tl.fit_translator(a, "X_feat", library_key="section", train=["S0", "S1", "S2"], **kw).save(tmp_path / "n")
    new = mst.tl.Translator.load(tmp_path / "n")
    # the same recipe (the head's description names `ensemble=False`, a default of format-1 days)
    assert {**old.recipe.as_dict(), "regressor": None} == {**new.recipe.as_dict(), "regressor": None}
    assert old.blocks == new.blocks
    assert old.genes == new.genes
    # the files were fitted on another CPU: the refit here differs by the rounding of its BLAS (on an AMD EPYC, up
    # to 3.3e-6 on log1p predictions of 2-6 and 1e-8 relative in the scores), not bit for bit
    np.testing.assert_allclose(old.predict(a), new.predict(a), rtol=0, atol=1e-5)
    np.testing.assert_allclose(old.applicability_scores(a)[0], new.applicability_scores(a)[0], rtol=1e-7)


def test_old_pickle_translator_file_is_refused_with_the_way_out(saved_translator, tmp_path):
    import joblib

    tr, _, _ = saved_translator
    old = tmp_path / "old.joblib"
    joblib.dump(tr, old)
    with pytest.raises(ValueError, match=r"old pickle \(joblib\) format.*joblib.load\(path\)` then `tr.save"):
        mst.tl.Translator.load(old)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="does not start with the morphst translator signature"):
        mst.tl.Translator.load(tmp_path / "x.txt")


def test_failed_save_leaves_the_old_file(saved_translator, monkeypatch):
    import os

    import morphst.tl._translation._io as tio

    tr, path, a = saved_translator
    data = path.read_bytes()
    other = mst.tl.fit_translator(a, "X_feat", genes=["g0"])
    written = []

    def killed(fd):  # the process dies after the bytes are written, before the rename
        written.append(os.fstat(fd).st_size)
        raise KeyboardInterrupt

    monkeypatch.setattr(tio.os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        other.save(path)
    assert written[0] > 0
    assert path.read_bytes() == data  # the old file is intact ...
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # ... and no partial file is left
    with pytest.raises(KeyboardInterrupt):
        other.save(path.with_name("new.morphst"))
    assert not path.with_name("new.morphst").exists()
    monkeypatch.undo()
    assert mst.tl.Translator.load(path).genes == tr.genes


def test_unsaveable_estimator_names_the_attribute(tdata, tmp_path):
    from sklearn.neighbors import KNeighborsRegressor

    tr = mst.tl.fit_translator(tdata, "X_feat", genes=["g0"], model=KNeighborsRegressor(algorithm="kd_tree"))
    with pytest.raises(TypeError, match=r"_tree.*neither arrays"):
        tr.save(tmp_path / "knn.morphst")
    assert not list(tmp_path.iterdir())


def test_pl_gene_functions_refuse_duplicates_and_zero_genes(tdata):
    a = tdata
    mst.tl.predict_expression(a, "X_feat", genes=["g0", "g1", "g2"])
    fig = mst.pl.gene_metrics(a, n_genes=2, return_fig=True, show=False)
    assert len(fig.axes[0].get_xticklabels()) == 2
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="`n_genes` must be a positive integer"):
            mst.pl.gene_metrics(a, n_genes=bad, show=False)
    names = list(a.var_names)
    names[5] = "g0"
    a.var_names = names
    with pytest.raises(ValueError, match=r"mst.pl.predicted_vs_observed.*var_names_make_unique\(\)"):
        mst.pl.predicted_vs_observed(a, ["g0"], show=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cv": "kfold", "n_splits": 2.5}, "`n_splits` must be an integer between 2"),
        ({"cv": "kfold", "n_splits": "3"}, "`n_splits` must be an integer between 2"),
        ({"cv": "spatial_block", "n_splits": 1}, "`n_splits` must be an integer between 2"),
        ({"cv": "kfold", "random_state": "x"}, "`random_state` must be an integer seed"),
    ],
)
def test_fold_parameters_are_checked_by_morphst(tdata, kwargs, match):
    before = _slots(tdata)
    with pytest.raises(ValueError, match=match):
        mst.tl.predict_expression(tdata, "X_feat", genes=["g0"], **kwargs)
    assert _slots(tdata) == before


# ------------------------------------------------------------------------------------------------------------------
# issue 14 §2: patients (leave one patient out, within-patient figures apart) and transfer options
# ------------------------------------------------------------------------------------------------------------------
def _two_patients(a):
    a.obs["patient"] = pd.Categorical(a.obs["section"].map({"S0": "P0", "S1": "P0", "S2": "P1", "S3": "P1"}))
    return a


def test_patient_key_runs_across_and_within_patient_folds(tdata):
    a = _two_patients(tdata)
    genes = ["g0", "g1", "g2", "g15"]
    mst.tl.predict_expression(a, "X_feat", genes=genes, patient_key="patient")
    pf = a.uns["predicted"]["per_fold"]
    assert list(zip(pf["fold"].astype(str), pf["kind"], strict=True)) == [
        ("P0", "across_patient"),
        ("P1", "across_patient"),
        ("S0", "within_patient"),
        ("S1", "within_patient"),
        ("S2", "within_patient"),
        ("S3", "within_patient"),
    ]
    # across: trained on the other patient's 2 sections; within: on the one other section of the same patient
    assert pf["n_train"].tolist() == [128, 128, 64, 64, 64, 64]
    summary = a.uns["predicted"]["summary"]
    for kind in ("across_patient", "within_patient"):
        sub = pf[pf["kind"] == kind]
        assert summary.loc[kind, "n_folds"] == len(sub)
        assert summary.loc[kind, "pcc"] == pytest.approx(sub["pcc"].mean())
        assert summary.loc[kind, "pcc_min"] == pytest.approx(sub["pcc"].min())
    # the layer and the fold column hold the across-patient predictions: those of a translator fit on patient P1
    p0 = (a.obs["patient"] == "P0").to_numpy()
    assert (a.obs["predicted_fold"].astype(str)[p0] == "P0").all()
    tr = mst.tl.fit_translator(a, "X_feat", genes=genes, train=["S2", "S3"])
    cols = [list(a.var_names).index(g) for g in tr.genes]
    np.testing.assert_allclose(a.layers["predicted"][p0][:, cols], tr.predict(a[p0]), rtol=1e-5, atol=1e-5)
    # a within-patient fold is the translator fit on the other section of the patient, scored on its own section
    tr_s0 = mst.tl.fit_translator(a, "X_feat", genes=genes, train=["S1"])
    s0 = (a.obs["section"] == "S0").to_numpy()
    p = tr_s0.predict(a[s0])
    y = a[s0, tr_s0.genes].layers["log1p_cp10k"].toarray()
    want = np.mean([np.corrcoef(p[:, j], y[:, j])[0, 1] for j in range(len(genes))])
    assert pf.set_index(pf["fold"].astype(str)).loc["S0", "pcc"] == pytest.approx(want, abs=1e-6)
    # the per-gene var metrics come from the across-patient folds only
    fm = a.uns["predicted"]["fold_metrics"]
    across = fm[fm["kind"] == "across_patient"].groupby("gene", observed=True)["pcc"].mean()
    np.testing.assert_allclose(a.var.loc[across.index, "predicted_pcc"], across.to_numpy())
    assert a.uns["predicted"]["params"]["patient_key"] == "patient"


def test_patient_key_errors_and_one_patient(tdata):
    a = _two_patients(tdata)
    with pytest.raises(ValueError, match="`patient_key` needs cv='leave_one_group_out'"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0"], patient_key="patient", cv="kfold")
    with pytest.raises(KeyError, match="`patient_key`='nope' is not an obs column"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0"], patient_key="nope")
    b = a.copy()
    b.obs["patient"] = pd.Categorical(np.where(np.arange(b.n_obs) % 2, "P0", "P1"))  # sections split across patients
    with pytest.raises(ValueError, match="belong to more than one patient"):
        mst.tl.predict_expression(b, "X_feat", genes=["g0"], patient_key="patient")
    c = a.copy()
    c.obs["patient"] = "P0"
    with pytest.warns(UserWarning, match="holds one patient"):
        mst.tl.predict_expression(c, "X_feat", genes=["g0"], patient_key="patient")
    assert set(c.uns["predicted"]["per_fold"]["kind"]) == {"within_patient"}
    assert c.obs["predicted_fold"].notna().all()


def test_no_patient_key_summary_is_the_fold_mean(tdata):
    a = tdata
    mst.tl.predict_expression(a, "X_feat", genes=["g0", "g1"])
    s = a.uns["predicted"]["summary"]
    pf = a.uns["predicted"]["per_fold"]
    assert list(s.index) == ["all"]
    assert s.loc["all", "pcc"] == pytest.approx(pf["pcc"].mean())
    assert s.loc["all", "mse_train_mean"] == pytest.approx(pf["mse_train_mean"].mean())
    assert "kind" not in pf.columns


def test_scale_per_group_is_a_per_section_z_score():
    from morphst.tl._translation._features import scale_per_group

    x = np.array([[1.0, 5.0], [3.0, 5.0], [10.0, 0.0], [20.0, 2.0], [30.0, 4.0]], dtype=np.float32)
    g = np.array(["a", "a", "b", "b", "b"], dtype=object)
    z = scale_per_group(x, g)
    # section a: mean (2, 5), std (1, 0 -> constant becomes 0); section b: mean (20, 2), std (sqrt(200/3), sqrt(8/3))
    np.testing.assert_allclose(z[:2], [[-1.0, 0.0], [1.0, 0.0]], atol=1e-6)
    sb = np.array([np.sqrt(200 / 3), np.sqrt(8 / 3)])
    np.testing.assert_allclose(z[2:], (x[2:] - [20.0, 2.0]) / sb, rtol=1e-6)


def test_scale_per_library_makes_a_translator_blind_to_a_section_wide_shift(tdata, tmp_path):
    """A held-out section whose features are shifted and rescaled as a whole (a stain / scanner change) gets the
    same predictions with scale_per_library, and different ones without."""
    a = tdata
    genes = ["g0", "g1", "g2"]
    new = a[(a.obs["section"] == "S1").to_numpy()].copy()
    shifted = new.copy()
    rng = np.random.default_rng(1)
    shifted.obsm["X_feat"] = new.obsm["X_feat"] * rng.uniform(0.5, 2.0, 12) + rng.normal(size=12) * 3
    plain = mst.tl.fit_translator(a, "X_feat", genes=genes, train=["S0", "S2", "S3"])
    scaled = mst.tl.fit_translator(a, "X_feat", genes=genes, train=["S0", "S2", "S3"], scale_per_library=True)
    assert scaled.params["scale_per_library"] is True
    with pytest.warns(UserWarning, match="Out of the translator's training domain: S1"):  # and it is flagged
        assert not np.allclose(plain.predict(shifted), plain.predict(new), atol=0.05)
    with pytest.warns(UserWarning, match="Out of the translator's training domain: S1"):  # the score still sees it
        np.testing.assert_allclose(scaled.predict(shifted), scaled.predict(new), rtol=1e-4, atol=1e-4)
    # stored in the file
    scaled.save(tmp_path / "s.morphst")
    back = mst.tl.Translator.load(tmp_path / "s.morphst")
    with pytest.warns(UserWarning, match="Out of the translator's training domain"):
        np.testing.assert_array_equal(back.predict(shifted), scaled.predict(shifted))
    # predict_expression with the option equals one fold of the same translator
    mst.tl.predict_expression(a, "X_feat", genes=genes, scale_per_library=True, select_on_train=False)
    rows = (a.obs["section"] == "S1").to_numpy()
    cols = [list(a.var_names).index(g) for g in scaled.genes]
    tr1 = mst.tl.fit_translator(
        a, "X_feat", genes=genes, train=["S0", "S2", "S3"], scale_per_library=True, select_on_train=False
    )
    np.testing.assert_allclose(a.layers["predicted"][rows][:, cols], tr1.predict(new), rtol=1e-5, atol=1e-5)
    assert a.uns["predicted"]["params"]["scale_per_library"] is True
    with pytest.raises(KeyError, match="scale_per_library=True"):
        mst.tl.predict_expression(a, "X_feat", genes=genes, scale_per_library=True, library_key=None, cv="kfold")


def test_stain_reference_is_stored_and_checked(tdata, tmp_path):
    sqe = pytest.importorskip("squidpy.experimental.im")
    ref = sqe.StainReference(
        method="macenko",
        stain_matrix=np.array([[0.65, 0.07, 0.27], [0.70, 0.99, 0.57], [0.29, 0.11, 0.78]]),
        white_point=np.array([255.0, 255.0, 255.0]),
    )
    tr = mst.tl.fit_translator(tdata, "X_feat", genes=["g0"], stain_reference=ref)
    assert tr.params["stain_method"] == "macenko"
    tr.save(tmp_path / "st.morphst")
    back = mst.tl.Translator.load(tmp_path / "st.morphst")
    assert back.stain_reference["method"] == "macenko"
    np.testing.assert_array_equal(back.stain_reference["stain_matrix"], ref.stain_matrix)
    assert sqe.StainReference(**back.stain_reference) == ref
    with pytest.raises(TypeError, match="squidpy StainReference"):
        mst.tl.fit_translator(tdata, "X_feat", genes=["g0"], stain_reference="macenko")


def test_her2st_pseudo_patients_mechanics(her2st_embedded):
    """Pairs of serial C sections as pseudo-patients: this checks the mechanics on real data, not a real
    across-patient figure (all five sections come from one tumour)."""
    a = her2st_embedded.copy()
    pseudo = {"C2": "pA", "C3": "pA", "C4": "pB", "C5": "pB", "C6": "pC"}
    a.obs["patient"] = pd.Categorical(a.obs["section"].astype(str).map(pseudo))
    mst.tl.predict_expression(a, "X_densenet121", patient_key="patient")
    pf = a.uns["predicted"]["per_fold"].set_index("fold")
    assert pf.loc[["pA", "pB", "pC"], "kind"].eq("across_patient").all()
    assert pf.loc[["C2", "C3", "C4", "C5"], "kind"].eq("within_patient").all()
    assert "C6" not in pf.index  # pC has one section: no within-patient fold
    # within: trained on the single other section of the pair (C2 <- C3 only)
    assert pf.loc["C2", "n_train"] == (a.obs["section"] == "C3").sum()
    assert pf.loc["pA", "n_train"] == a.obs["section"].isin(["C4", "C5", "C6"]).sum()
    # real signal in every fold of both kinds (known: ~0.4 mean PCC leave-one-section-out on these sections)
    assert (pf["pcc"] > 0.1).all()
    s = a.uns["predicted"]["summary"]
    assert set(s.index) == {"across_patient", "within_patient"}
    assert s.loc["within_patient", "n_folds"] == 4


def test_large_training_folds_choose_the_penalty_on_a_seeded_subsample(monkeypatch):
    """Above MAX_ALPHA_ROWS the ridge penalty comes from the same inner CV on a seeded subsample, then Ridge(alpha)
    is fit on every row; at or below it the fit is RidgeCV as before."""
    from sklearn.linear_model import Ridge, RidgeCV

    from morphst.tl._translation import _model

    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 8))
    y = x @ rng.normal(size=(8, 4)) + rng.normal(scale=3.0, size=(600, 4))
    groups = np.repeat(["a", "b", "c"], 200)
    est, _ = _model.make_model("ridge", n_train=600, n_features=8, inner_groups=groups)
    small, note = _model.fit_model(est, x, y, inner_groups=groups)
    assert note == ""
    assert isinstance(small.named_steps["ridge"], RidgeCV)

    monkeypatch.setattr(_model, "MAX_ALPHA_ROWS", 150)
    est, _ = _model.make_model("ridge", n_train=600, n_features=8, inner_groups=groups)
    big, note = _model.fit_model(est, x, y, inner_groups=groups, random_state=5)
    assert "subsample of 150 of 600 training rows" in note
    rows = np.sort(np.random.default_rng(5).choice(600, 150, replace=False))
    ref, _ = _model.make_model("ridge", n_train=150, n_features=8, inner_groups=groups[rows], random_state=5)
    alpha = ref.fit(x[rows], y[rows]).named_steps["ridge"].alpha_
    ridge = big.named_steps["ridge"]
    assert isinstance(ridge, Ridge)
    assert ridge.alpha == alpha
    assert _model.chosen_alpha(big) == alpha
    z = big[:-1].transform(x)  # the scaler and PCA are fit on every row
    np.testing.assert_allclose(ridge.coef_, Ridge(alpha=alpha).fit(z, y).coef_, rtol=1e-10)


def test_cv_auto_single_section_uses_spatial_blocks(tdata, caplog):
    import logging

    one = tdata[tdata.obs["section"] == "S0"].copy()  # 64 spots on an 8 x 8 grid
    with caplog.at_level(logging.INFO, logger="morphst"):
        mst.tl.predict_expression(one, "X_feat", genes=["g0", "g1"])
    params = one.uns["predicted"]["params"]
    assert params["cv"] == "spatial_block"
    assert params["cv_requested"] == "auto"
    assert "one section" in caplog.text
    assert "spatial-block" in caplog.text
    fold = one.obs["predicted_fold"]
    assert list(fold.cat.categories) == [f"block{b}" for b in range(5)]
    # 64 spots in 5 strips of equal count along x (ranks * 5 // 64): 13, 13, 13, 13, 12 spots
    assert fold.value_counts().sort_index().tolist() == [13, 13, 13, 13, 12]
    # same folds as asking for spatial blocks explicitly
    two = tdata[tdata.obs["section"] == "S0"].copy()
    mst.tl.predict_expression(two, "X_feat", genes=["g0", "g1"], cv="spatial_block")
    np.testing.assert_array_equal(fold.to_numpy(), two.obs["predicted_fold"].to_numpy())
    # no section column at all: also one section
    del one.obs["section"]
    mst.tl.predict_expression(one, "X_feat", genes=["g0"], key_added="p2")
    assert one.uns["p2"]["params"]["cv"] == "spatial_block"
    # without coordinates a clear error that names the alternatives
    del one.obsm["spatial"]
    with pytest.raises(KeyError, match=r"one section .* cv='kfold'"):
        mst.tl.predict_expression(one, "X_feat", genes=["g0"], key_added="p3")
    assert "p3" not in one.uns


def test_cv_auto_several_sections_leaves_one_out(tdata):
    mst.tl.predict_expression(tdata, "X_feat", genes=["g0", "g1"])
    params = tdata.uns["predicted"]["params"]
    assert params["cv"] == "leave_one_group_out"
    assert params["cv_requested"] == "auto"
    assert list(tdata.uns["predicted"]["per_fold"]["fold"]) == ["S0", "S1", "S2", "S3"]


def test_applicability_with_scale_per_library_sees_the_shift_scaling_removes(tdata, tmp_path):
    """The score is measured before per-section scaling: a shifted section is flagged as it is without scaling."""
    a = tdata
    genes = ["g0", "g1"]
    new = a[(a.obs["section"] == "S1").to_numpy()].copy()
    shifted = new.copy()
    rng = np.random.default_rng(1)
    shifted.obsm["X_feat"] = new.obsm["X_feat"] * rng.uniform(0.5, 2.0, 12) + rng.normal(size=12) * 3
    plain = mst.tl.fit_translator(a, "X_feat", genes=genes, train=["S0", "S2", "S3"])
    scaled = mst.tl.fit_translator(a, "X_feat", genes=genes, train=["S0", "S2", "S3"], scale_per_library=True)
    assert scaled.applicability.before_scaling
    assert not plain.applicability.before_scaling
    # same unscaled training features, same seed: the two domains give the same scores
    for b in (new, shifted):
        np.testing.assert_allclose(scaled.applicability_scores(b)[0], plain.applicability_scores(b)[0], rtol=1e-10)
    s_new, v_new = scaled.applicability_scores(new)
    s_shift, v_shift = scaled.applicability_scores(shifted)
    assert bool(v_new.loc["S1", "in_domain"])
    assert not bool(v_shift.loc["S1", "in_domain"])
    assert v_shift.loc["S1", "frac_beyond"] > 0.5
    assert np.median(s_shift) > 2 * np.median(s_new)
    # what the old behaviour (distances on the scaled features) gave: blind, the shifted section looks in domain
    from morphst.tl._translation._applicability import ApplicabilityDomain
    from morphst.tl._translation._features import scale_per_group

    train = a[a.obs["section"] != "S1"]
    blind = ApplicabilityDomain.fit(
        scale_per_group(np.asarray(train.obsm["X_feat"], float), train.obs["section"].to_numpy(object)),
        train.obs["section"].to_numpy(object),
    )
    z = scale_per_group(np.asarray(shifted.obsm["X_feat"], float), shifted.obs["section"].to_numpy(object))
    assert blind.verdict(blind.score(z), None).loc["all", "in_domain"]
    # the flag survives save / load, and the table written by predict_adata holds the unscaled-feature scores
    scaled.save(tmp_path / "s.morphst")
    back = mst.tl.Translator.load(tmp_path / "s.morphst")
    assert back.applicability.before_scaling
    with pytest.warns(UserWarning, match="Out of the translator's training domain"):
        out = back.predict_adata(shifted)
    np.testing.assert_allclose(out.obs["applicability_score"], s_shift, rtol=1e-5)


def test_predict_sdata_given_an_anndata_says_what_to_pass(tdata):
    tr = mst.tl.fit_translator(tdata, "X_feat", genes=["g0"], train=["S0", "S1"])
    for fn in (tr.predict_sdata, tr.predict_grid):
        with pytest.raises(TypeError, match=r"needs a SpatialData .* got AnnData\. .*predict_adata"):
            fn(tdata)
    with pytest.raises(TypeError, match="got ndarray"):
        tr.predict_sdata(np.zeros(3))
    from spatialdata import SpatialData

    sd = SpatialData(tables={"table": tdata})
    for fn in (tr.predict, tr.predict_adata, tr.applicability_scores, tr.features):  # the table methods
        with pytest.raises(TypeError, match=r"pass `sdata.tables\['table'\]`, or use `tr.predict_sdata\(sdata\)`"):
            fn(sd)
    np.testing.assert_array_equal(tr.predict(sd.tables["table"]), tr.predict(tdata))  # the table itself works


def test_model_keyword_is_renamed_regressor(tdata):
    a, b = tdata.copy(), tdata.copy()
    with pytest.warns(FutureWarning, match=r"`predict_expression\(model=...\)` is now `regressor=`"):
        mst.tl.predict_expression(a, "X_feat", genes=["g0", "g1"], model="mlp")
    mst.tl.predict_expression(b, "X_feat", genes=["g0", "g1"], regressor="mlp")
    assert np.array_equal(a.layers["predicted"], b.layers["predicted"], equal_nan=True)
    assert a.uns["predicted"]["params"]["regressor"] == "mlp"
    with pytest.warns(FutureWarning, match=r"`fit_translator\(model=...\)` is now `regressor=`"):
        tr = mst.tl.fit_translator(a, "X_feat", genes=["g0"], model="mlp")
    assert tr.params["regressor"] == "mlp"


def test_translator_keeps_its_recipe_once(tdata, tmp_path):
    tr = mst.tl.fit_translator(
        tdata, "X_feat", genes=["g0", "g1"], spatial_context=4, global_context=True, train=["S0", "S1", "S2"]
    )
    assert tr.recipe.use_rep == tr.use_rep == "X_feat"
    assert (tr.spatial_context, tr.global_context, tr.library_key) == (4, True, "section")
    assert tr.params["spatial_context"] == 4
    assert tr.params["n_train"] == 192
    tr.save(tmp_path / "t")
    back = mst.tl.Translator.load(tmp_path / "t")
    assert back.recipe == tr.recipe
    assert back.fit == tr.fit
    assert np.array_equal(back.predict(tdata), tr.predict(tdata))


def _state(a):
    """What a call could write into ``a``: its slots' keys and the values of X."""
    return (
        sorted(a.layers.keys()), sorted(a.obs.columns), sorted(a.var.columns), sorted(a.uns.keys()),
        sorted(a.obsm.keys()), a.X.copy(),
    )  # fmt: skip


@pytest.mark.parametrize(
    "call",
    [
        lambda a: mst.tl.predict_expression(a, "X_feat", genes=["g0"], library_key="sections"),
        lambda a: mst.tl.predict_expression(a, "X_feat", genes=["g0"], library_key="sections", cv="spatial_block"),
        lambda a: mst.tl.fit_translator(a, "X_feat", genes=["g0"], library_key="sections"),
        lambda a: mst.tl.learn_translation_features(a, "X_feat", genes=["g0"], library_key="sections"),
        lambda a: mst.tl.fit_translator(a, "X_feat", genes=["g0"]).predict(a, library_key="sections"),
    ],
)
def test_misspelt_library_key_is_a_key_error_before_anything_is_written(tdata, call):
    before = _state(tdata)
    with pytest.raises(KeyError, match=r"`library_key`='sections' is not an obs column.*'section'"):
        call(tdata)
    after = _state(tdata)
    assert before[:5] == after[:5]
    assert (before[5] != after[5]).nnz == 0


def test_default_library_key_absent_is_one_section(tdata):
    one = tdata[tdata.obs["section"] == "S0"].copy()
    del one.obs["section"]
    mst.tl.predict_expression(one, "X_feat", genes=["g0"])  # the default "section": absent means one section
    assert one.uns["predicted"]["params"]["cv"] == "spatial_block"


def test_spatial_blocks_are_cut_per_section_never_pooled(tdata):
    a = tdata
    xy = a.obsm["spatial"].copy()
    sec = a.obs["section"].to_numpy()
    xy[sec == "S1", 0] += 100_000.0  # far apart along x: pooled strips would hold whole sections
    xy[sec == "S2", 1] += 100_000.0
    a.obsm["spatial"] = xy
    mst.tl.predict_expression(a, "X_feat", genes=["g0"], cv="spatial_block", n_splits=4)
    fold = a.obs["predicted_fold"]
    ct = pd.crosstab(a.obs["section"], fold)
    assert (ct.to_numpy() == 16).all()  # every block holds a quarter of every section (64 spots each)
    for s in ["S0", "S1", "S2", "S3"]:
        rows = sec == s
        for f in fold.cat.categories:
            sel = (fold[rows] == f).to_numpy()
            assert min(np.ptp(xy[rows][sel], axis=0)) <= 200.0  # a strip two grid steps wide within the section
