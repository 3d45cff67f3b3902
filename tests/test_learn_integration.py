"""The integration objective (`fit_integration`): HSIC-penalised projection and the cross-fitted residual."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from morphst.tl import TrainOptions
from morphst.tl._learn._integration import fit_integration

FAST = TrainOptions(max_epochs=60, patience=20, learning_rate=1e-2, dropout=0.0)


def _grid_edges(side: int) -> tuple[np.ndarray, np.ndarray]:
    """4-neighbour edges of a ``side × side`` grid, both directions."""
    idx = np.arange(side * side).reshape(side, side)
    pairs = [(idx[:, :-1], idx[:, 1:]), (idx[:-1], idx[1:])]
    rows = np.concatenate([np.concatenate([a.ravel(), b.ravel()]) for a, b in pairs])
    cols = np.concatenate([np.concatenate([b.ravel(), a.ravel()]) for a, b in pairs])
    return rows, cols


def _toy(spatial_table, side: int = 16, seed: int = 0):
    """Features: 6 columns shared with expression (spatially smooth), 4 private (a left/right domain), 3 of noise."""
    a = spatial_table(plant="shared", n_sections=1, side=side, n_genes=8, n_features=13, seed=seed)
    domain = (a.obs["domain"] == "right").to_numpy().astype(np.int64)
    return a.obsm["X_feat"], a.obsm["X_pca"], domain, _grid_edges(side)


def _max_abs_r(z: np.ndarray, e: np.ndarray) -> float:
    zs = (z - z.mean(0)) / z.std(0)
    es = (e - e.mean(0)) / e.std(0)
    return float(np.abs(zs.T @ es / len(z)).max())


def _accuracy(z: np.ndarray, y: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    return float(cross_val_score(LogisticRegression(max_iter=2000), z, y, cv=5).mean())


def _hsic(x, expr, *, labels=None, edges=None, penalty_weight=10.0, random_state=0, train=None, groups=None):
    train = np.ones(len(x), bool) if train is None else train
    return fit_integration(
        x,
        expr,
        train=train,
        labels=labels,
        edges=edges,
        groups=groups,
        method="hsic",
        n_components=4,
        penalty_weight=penalty_weight,
        options=FAST,
        random_state=random_state,
        device="cpu",
    )


def test_hsic_self_supervised_removes_shared_keeps_domain(spatial_table):
    x, expr, domain, edges = _toy(spatial_table)
    assert _max_abs_r(x, expr) > 0.9  # the shared columns
    z0, _ = _hsic(x, expr, edges=edges, penalty_weight=0.0)
    # the RBF-HSIC penalty is weaker per unit weight on linear dependence than the squared Pearson r it replaced
    # (normalised RFF estimate 0.27 at r = 0.6), hence weight 50 here (was 10)
    z, rec = _hsic(x, expr, edges=edges, penalty_weight=50.0)
    assert z.shape == (len(x), 4)
    assert z.dtype == np.float32
    # the penalty is what removes the shared information: without it the projection keeps some
    assert _max_abs_r(z0, expr) > 0.5
    assert _max_abs_r(z, expr) < 0.25
    # the private, spatially coherent domain survives (chance: 0.5)
    assert _accuracy(z, domain) > 0.8
    curve = rec["curve"]
    assert {"train_loss", "val_loss", "val_penalty", "val_relevance"} <= set(curve.columns)
    assert 1 <= rec["chosen_epoch"] <= len(curve) <= FAST.max_epochs
    assert curve.loc[rec["chosen_epoch"], "val_loss"] == curve["val_loss"].min()
    assert "InfoNCE" in rec["description"]


def test_hsic_with_labels_stays_relevant(spatial_table):
    x, expr, domain, _ = _toy(spatial_table, seed=1)
    labels = domain.copy()
    labels[::7] = -1  # missing annotations are ignored
    z, rec = _hsic(x, expr, labels=labels)
    assert _max_abs_r(z, expr) < 0.25
    assert _accuracy(z, domain) > 0.85  # chance: 0.5
    assert "cross-entropy" in rec["description"]


def test_hsic_fits_on_train_rows_only(spatial_table):
    x, expr, _, edges = _toy(spatial_table, seed=2)
    train = np.ones(len(x), bool)
    train[::4] = False
    z, _ = _hsic(x, expr, edges=edges, train=train)
    x2 = x.copy()
    x2[~train] += np.random.default_rng(0).normal(0, 50, size=x2[~train].shape).astype(np.float32)
    z2, _ = _hsic(x2, expr, edges=edges, train=train)
    # held-out rows are transformed, never fitted: changing them changes only their own z
    np.testing.assert_array_equal(z[train], z2[train])
    assert not np.allclose(z[~train], z2[~train])


def test_hsic_seeded_repeatable(spatial_table):
    x, expr, _, edges = _toy(spatial_table, side=14, seed=3)
    a, ra = _hsic(x, expr, edges=edges, random_state=5)
    b, rb = _hsic(x, expr, edges=edges, random_state=5)
    c, _ = _hsic(x, expr, edges=edges, random_state=6)
    np.testing.assert_array_equal(a, b)
    assert ra["chosen_epoch"] == rb["chosen_epoch"]
    assert not np.allclose(a, c)


def _ridge_residual(xs, e, fit, pred, alpha):
    """Hand-written ridge with intercept (centred on the fitting rows), residual on ``pred`` rows."""
    em, xm = e[fit].mean(0), xs[fit].mean(0)
    ec = e[fit] - em
    beta = np.linalg.solve(ec.T @ ec + alpha * np.eye(e.shape[1]), ec.T @ (xs[fit] - xm))
    return xs[pred] - ((e[pred] - em) @ beta + xm)


@pytest.mark.parametrize("n_sections", [1, 3])
def test_residual_cross_fitted_and_orthogonal(n_sections):
    rng = np.random.default_rng(4)
    n = 600
    expr = rng.normal(size=(n, 5))
    x = np.hstack([expr[:, :2] @ rng.normal(size=(2, 4)) + 0.5 * rng.normal(size=(n, 4)), rng.normal(size=(n, 3))])
    x = (x * 3 + 7).astype(np.float32)
    groups = np.repeat(["s0", "s1", "s2"], n // 3) if n_sections == 3 else None
    train = np.ones(n, bool)
    train[rng.choice(n, 60, replace=False)] = False
    z, rec = fit_integration(
        x,
        expr,
        train=train,
        labels=None,
        edges=None,
        groups=groups,
        method="residual",
        n_components=1,
        penalty_weight=0.0,
        options=TrainOptions(),
        random_state=0,
        device="cpu",
    )
    assert z.shape == x.shape
    fold = rec["fold"]
    assert len(np.unique(fold)) == (3 if n_sections == 3 else 5)
    if n_sections == 3:
        np.testing.assert_array_equal(fold, np.repeat([0, 1, 2], n // 3))
    # standardisation on the training rows
    xd = x.astype(np.float64)
    xs = (xd - xd[train].mean(0)) / xd[train].std(0)
    for f, alpha in rec["curve"]["alpha"].items():
        fit, pred = train & (fold != f), fold == f
        assert rec["curve"].loc[f, "n_fit"] == fit.sum()
        np.testing.assert_allclose(z[pred], _ridge_residual(xs, expr, fit, pred, alpha), atol=1e-4)
        # the least-squares residual is exactly orthogonal to expression on its fitting rows; the ridge one
        # (small alpha against 480+ rows) is close to it
        design = np.column_stack([np.ones(fit.sum()), expr[fit]])
        coef, *_ = np.linalg.lstsq(design, xs[fit], rcond=None)
        res_fit = xs[fit] - design @ coef
        assert np.abs(design.T @ res_fit).max() < 1e-8
        ols_pred = xs[pred] - np.column_stack([np.ones(pred.sum()), expr[pred]]) @ coef
        assert np.abs(z[pred] - ols_pred).max() < 0.1
    # out of fold, the residual no longer correlates with expression (raw: > 0.8)
    assert _max_abs_r(x, expr) > 0.8
    assert _max_abs_r(z[:, :4], expr) < 0.15
    # the private columns are kept (correlation with the raw ones)
    r = [np.corrcoef(z[:, j], x[:, j])[0, 1] for j in range(4, 7)]
    assert min(r) > 0.98


def test_bad_inputs_raise(spatial_table):
    x, expr, domain, edges = _toy(spatial_table, side=8)
    n = len(x)
    ok = {
        "train": np.ones(n, bool),
        "labels": None,
        "edges": edges,
        "groups": None,
        "method": "hsic",
        "n_components": 2,
        "penalty_weight": 1.0,
        "options": FAST,
        "random_state": 0,
        "device": "cpu",
    }
    cases = [
        ({"method": "adversarial"}, "method"),
        ({"n_components": 0}, "n_components"),
        ({"penalty_weight": -1.0}, "penalty_weight"),
        ({"train": np.ones(n, int)}, "train"),
        ({"train": np.zeros(n, bool)}, "train"),
        ({"edges": None}, "edges"),
        ({"edges": (np.array([0]), np.array([n]))}, "edges"),
        ({"labels": np.zeros(n, np.int64), "edges": None}, "labels"),
        ({"labels": domain.astype(float), "edges": None}, "labels"),
        ({"groups": np.zeros(n - 1)}, "groups"),
        ({"options": TrainOptions(max_epochs=0)}, "max_epochs"),
    ]
    for change, word in cases:
        with pytest.raises(ValueError, match=word):
            fit_integration(x, expr, **(ok | change))
    with pytest.raises(ValueError, match="constant on the training rows"):  # e.g. all-black patches
        fit_integration(np.ones_like(x), expr, **(ok | {"method": "residual"}))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fit_integration(bad, expr, **ok)
    with pytest.raises(ValueError, match="expr"):
        fit_integration(x, expr[:-1], **ok)


def _morans_i(z: np.ndarray, edges, rows: np.ndarray) -> np.ndarray:
    """Moran's I of each column over ``rows`` with row-standardised weights (edges inside ``rows``), by hand."""
    keep = np.zeros(len(z), bool)
    keep[rows] = True
    r, c = edges
    ok = keep[r] & keep[c]
    r, c = r[ok], c[ok]
    deg = np.bincount(r, minlength=len(z)).astype(float)
    anchors = np.flatnonzero(keep & (deg > 0))
    zc = z - z[anchors].mean(0)
    lag = np.zeros_like(zc)
    np.add.at(lag, r, zc[c])
    lag[anchors] /= deg[anchors, None]
    return (zc[anchors] * lag[anchors]).sum(0) / (zc[anchors] ** 2).sum(0)


def _sections(n_sec=3, side=14, p=400, seed=0, offset=0.0, domain=0.0):
    """``n_sec`` grid sections of Gaussian features (plus a per-section offset and a left/right private domain)."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    n = side * side
    col = np.tile(np.arange(side), side)
    coords = np.column_stack([col, np.repeat(np.arange(side), side)]) * 100.0
    a = ad.AnnData(np.zeros((n * n_sec, 1), np.float32))
    a.obs["section"] = pd.Categorical(np.repeat([f"s{i}" for i in range(n_sec)], n))
    a.obsm["spatial"] = np.vstack([coords] * n_sec)
    x = rng.normal(size=(n * n_sec, p)) + offset * np.repeat(rng.normal(size=(n_sec, p)), n, axis=0)
    x[:, :4] += domain * np.tile(2.0 * (col >= side // 2) - 1, n_sec)[:, None]
    a.obsm["X_m"] = x.astype(np.float32)
    a.obsm["X_pca"] = rng.normal(size=(n * n_sec, 10)).astype(np.float32)
    return a


@pytest.mark.parametrize("seed", [0, 1])
def test_maf_noise_gives_no_component(seed):
    import morphst as mst

    a = _sections(seed=seed)
    with pytest.warns(UserWarning, match=r"No spatial component of `obsm\['X_m'\]` is significant at alpha 0.05"):
        mst.tl.learn_integration_features(a, "X_m", random_state=seed)
    assert a.obsm["X_learned_integration"].shape == (a.n_obs, 0)
    mst.tl.learn_integration_features(a, "X_m", n_components=3, random_state=seed, key_added="k3")
    comp = a.uns["k3"]["components"]
    assert a.obsm["k3"].shape == (a.n_obs, 3)
    assert not comp["significant"].any()
    # fuse leaves the flagged columns out: the fused block is the expression block alone
    mst.tl.fuse(a, ("X_pca", "k3"), method="stitch", key_added="f")
    assert a.uns["f"]["params"]["left_out"] == {"k3": [0, 1, 2]}
    assert a.obsm["f"].shape == (a.n_obs, 10)


def test_maf_section_offset_not_encoded_domain_found():
    from sklearn.linear_model import LinearRegression

    import morphst as mst

    a = _sections(p=60, offset=3.0, domain=1.0)
    mst.tl.learn_integration_features(a, "X_m", n_components=3)
    z = a.obsm["X_learned_integration"]
    dummies = pd.get_dummies(a.obs["section"]).to_numpy(float)
    r2 = [LinearRegression().fit(dummies, z[:, j]).score(dummies, z[:, j]) for j in range(3)]
    assert max(r2) < 1e-6  # centred per section: the offset cannot be a component
    comp = a.uns["X_learned_integration"]["components"]
    assert comp["significant"].tolist() == [True, False, False]
    right = np.tile(np.arange(14) >= 7, 14 * 3)
    assert abs(np.corrcoef(z[:, 0], right)[0, 1]) > 0.85
    # the criterion is variance x Moran's I of the component on the training spots (by hand)
    from morphst._utils._graph import knn_edges, symmetrise

    r, c, d, _ = knn_edges(a.obsm["spatial"], a.obs["section"].to_numpy(), n_neighs=6)
    r, c, _ = symmetrise(r, c, d, a.n_obs)
    edges = (np.asarray(r), np.asarray(c))
    i_hand = _morans_i(z.astype(np.float64), edges, np.arange(a.n_obs))
    np.testing.assert_allclose(comp["moran_I"], i_hand, atol=2e-3)
    np.testing.assert_allclose(comp["criterion"], comp["moran_I"], rtol=1e-9)  # maf: Moran's I itself
    np.testing.assert_allclose(comp["variance"], 1.0, rtol=1e-6)
    assert comp["moran_I_held_out"].iloc[0] > 0.5
    assert comp["p_value_held_out"].iloc[0] < 1e-6


def test_maf_section_statistics_and_held_out_sections():
    import morphst as mst

    a = _sections(p=30, offset=2.0, domain=1.0)
    x = a.obsm["X_m"].astype(np.float64)
    sec = a.obs["section"].to_numpy().astype(str)
    train = (sec != "s2") & (np.arange(a.n_obs) % 5 != 0)  # s2 never seen; every 5th spot of s0/s1 held out
    a.obs["train"] = train
    mst.tl.learn_integration_features(a, "X_m", n_components=2, train="train", scale=True)
    st = a.uns["X_learned_integration"]["sections"]
    assert st["names"] == ["s0", "s1", "s2"]
    for i, s in enumerate(st["names"]):
        rows = (sec == s) & train if s != "s2" else sec == s  # a section without training spots: its own rows
        np.testing.assert_allclose(st["mean"][i], x[rows].mean(0), rtol=1e-9)
        np.testing.assert_allclose(st["scale"][i], x[rows].std(0), rtol=1e-9)
    z = a.obsm["X_learned_integration"].copy()
    # new data: shifting a whole unseen section leaves its features unchanged (its own statistics); shifting the
    # held-out spots of a training section moves them (the stored statistics), and nothing else
    b = a.copy()
    shift = np.where(sec == "s2", 5.0, 0.0)[:, None] + np.where((sec == "s0") & ~train, 5.0, 0.0)[:, None]
    b.obsm["X_m"] = (x + shift).astype(np.float32)
    mst.tl.learn_integration_features(b, "X_m", n_components=2, train="train", scale=True)
    zb = b.obsm["X_learned_integration"]
    np.testing.assert_allclose(zb[sec == "s2"], z[sec == "s2"], atol=1e-4)
    np.testing.assert_allclose(zb[train], z[train], atol=1e-4)
    assert np.abs(zb[(sec == "s0") & ~train] - z[(sec == "s0") & ~train]).min() > 0.1
    # held-out Moran's I: the components' Moran's I on the section not used to fit (by hand)
    from morphst._utils._graph import knn_edges, symmetrise

    r, c, d, _ = knn_edges(a.obsm["spatial"], sec, n_neighs=6)
    r, c, _ = symmetrise(r, c, d, a.n_obs)
    held = _morans_i(z.astype(np.float64), (np.asarray(r), np.asarray(c)), np.flatnonzero(sec == "s2"))
    np.testing.assert_allclose(a.uns["X_learned_integration"]["components"]["moran_I_held_out"], held, atol=1e-4)


def test_rbf_hsic_penalty_matches_the_gram_matrix_estimate():
    import torch

    from morphst.tl._learn._hsic import median_bandwidth, rbf_hsic_penalty

    rng = np.random.default_rng(0)
    b = 200
    w = rng.normal(size=(b, 2))
    z = np.column_stack([w[:, 0] ** 2, rng.normal(size=b)])  # non-linear dependence (r ~ 0), independence

    def gram(v, bw):
        return np.exp(-((v[:, None] - v[None, :]) ** 2) / (2 * bw**2))

    def hsic(k, l_):
        h = np.eye(b) - 1.0 / b
        return np.trace(k @ h @ l_ @ h) / b**2

    zs = (z - z.mean(0)) / z.std(0, ddof=1)
    bw_w = np.array([median_bandwidth(w[:, e]) for e in range(2)])
    naive = []
    for j in range(2):
        kz = gram(zs[:, j], median_bandwidth(zs[:, j]))
        naive.append(
            sum(
                hsic(kz, gram(w[:, e], bw_w[e])) / np.sqrt(hsic(kz, kz) * hsic(*(gram(w[:, e], bw_w[e]),) * 2))
                for e in range(2)
            )
        )
    g = torch.Generator().manual_seed(0)
    d = 8192
    fr = torch.randn(1, d, generator=g, dtype=torch.float64)
    ph = torch.rand(d, generator=g, dtype=torch.float64) * 2 * np.pi
    got = rbf_hsic_penalty(torch.from_numpy(z), torch.from_numpy(w), torch.from_numpy(bw_w), fr, ph).numpy()
    np.testing.assert_allclose(got, naive, atol=0.02)
    assert naive[0] > 0.2
    assert naive[1] < 0.05
    assert abs(np.corrcoef(z[:, 0], w[:, 0])[0, 1]) < 0.25


def test_learn_features_integration_adds_the_image_only_domains():
    """``learn_features(objective="integration")`` on ``morphology_domains``: D3/D4 share expression."""
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score

    import morphst as mst

    sdata = mst.datasets.morphology_domains(24, 24, random_state=0)
    a = sdata.tables["table"]
    mst.pp.extract_patches(sdata, patch_size=100.0, target_px=48)
    mst.tl.embed_patches(sdata, model="handcrafted")
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.pca(a, n_comps=10, random_state=0)
    truth = a.obs["truth"].astype(str)
    d34 = truth.isin(["D3", "D4"]).to_numpy()

    def ari(rep):
        mst.tl.domains(a, rep, method="gmm", n_domains=5, random_state=0, key_added="_d")
        return adjusted_rand_score(truth[d34], a.obs["_d"].astype(str)[d34])

    mst.tl.learn_features(a, "X_handcrafted", objective="integration", library_key=None)
    z = a.obsm["X_learned_integration"]
    comp = a.uns["X_learned_integration"]["components"]
    # n_components=None (was 8): the significant components, at least the image-only domain contrast
    assert 1 <= z.shape[1] == len(comp)
    assert comp["significant"].all()
    params = a.uns["X_learned_integration"]["params"]
    assert (params["method"], params["method_requested"]) == ("maf", "auto")  # no annotation_key
    mst.tl.fuse(a, ("X_pca", "X_learned_integration"), method="stitch", key_added="X_fused")
    # expression alone cannot split D3 from D4; fused with the learned features it can
    assert ari("X_pca") < 0.2
    assert ari("X_fused") > 0.8
    assert _max_abs_r(z[:, :2], a.obsm["X_pca"]) < 0.3


def test_learn_features_auto_method_with_labels_is_hsic(spatial_table):
    import morphst as mst

    a = spatial_table(
        plant="shared", n_sections=1, side=12, spacing=100.0, n_genes=8, n_features=13, feature_key="X_morph"
    )
    mst.tl.learn_features(
        a, "X_morph", objective="integration", annotation_key="domain", n_components=2, options=FAST, library_key=None
    )
    params = a.uns["X_learned_integration"]["params"]
    assert (params["method"], params["method_requested"]) == ("hsic", "auto")
    assert "cross-entropy" in params["model_description"]
    with pytest.raises(ValueError, match="self-supervised"):
        mst.tl.learn_features(
            a, "X_morph", objective="integration", annotation_key="domain", method="moran", library_key=None,
            key_added="X_m",
        )  # fmt: skip
    assert "X_m" not in a.obsm
