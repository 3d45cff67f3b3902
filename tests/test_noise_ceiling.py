"""mst.tl noise ceiling: binomial thinning + Spearman–Brown against hand values and a known Poisson truth."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from morphst.tl import noise_ceiling
from morphst.tl._ceiling import spearman_brown


def test_spearman_brown_hand_values():
    # 2 * 0.5 / (1 + 0.5) = 2/3; three times as long: 3 * 0.6 / (1 + 2 * 0.6) = 1.8 / 2.2
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(0.6, factor=3) == pytest.approx(1.8 / 2.2)
    assert spearman_brown(0.0) == 0.0
    np.testing.assert_allclose(spearman_brown(np.array([0.25, 1.0])), [0.5 / 1.25, 1.0])
    assert np.isnan(spearman_brown(-1.0))


def _poisson_table(n: int = 4000, n_null: int = 20, seed: int = 1, *, as_sparse: bool = True):
    """Gene 'signal' with a known per-spot mean, ``n_null`` genes without signal, one deep housekeeping gene.

    The housekeeping gene (1e6 counts) fixes every library size at ~1e6, so the target of gene g is
    log1p(c * y) with c = 1e4 / 1e6 and, by the delta method, Var(log1p(c y) | mu) = c^2 mu / (1 + c mu)^2.
    """
    rng = np.random.default_rng(seed)
    mu = 100.0 * np.exp(0.1 * rng.standard_normal(n))
    counts = np.column_stack([rng.poisson(mu), rng.poisson(100.0, size=(n, n_null)), rng.poisson(1e6, size=n)]).astype(
        np.float64
    )
    names = ["signal", *[f"null{i}" for i in range(n_null)], "housekeeping"]
    a = ad.AnnData(sparse.csr_matrix(counts) if as_sparse else counts, var=pd.DataFrame(index=names))
    c = 1e4 / 1e6
    signal_var = np.var(np.log1p(c * mu))
    noise_var = np.mean(c**2 * mu / (1 + c * mu) ** 2)
    return a, signal_var / (signal_var + noise_var)


@pytest.mark.parametrize("as_sparse", [True, False])
def test_poisson_reliability_matches_analytic(as_sparse):
    a, analytic = _poisson_table(as_sparse=as_sparse)
    assert 0.4 < analytic < 0.6  # the design: signal and noise of similar size
    noise_ceiling(a)
    rel = a.varm["noise_ceiling_reliability"]["0"]
    ceil = a.varm["noise_ceiling"]["0"]
    # standard error of the estimate at n = 4000 is ~0.02
    assert rel["signal"] == pytest.approx(analytic, abs=0.05)
    assert ceil["signal"] == pytest.approx(np.sqrt(rel["signal"]))
    null = rel[[g for g in a.var_names if g.startswith("null")]]
    assert abs(null.mean()) < 0.03  # no signal: reliability ~ 0 (20 genes, SE of the mean ~0.007)
    assert null.abs().max() < 0.15
    per = a.uns["noise_ceiling"]["per_section"]
    assert per.loc[0, "n_spots"] == 4000
    assert per.loc[0, "n_genes"] == a.n_vars
    assert per.loc[0, "ceiling"] == pytest.approx(np.sqrt(rel.clip(lower=0)).mean())


def test_within_section_only_and_gene_subset():
    """A section offset without within-section signal gives ~0, not the pooled correlation."""
    rng = np.random.default_rng(0)
    n = 2000
    sec = np.repeat(["A", "B"], n // 2)
    mu_offset = np.where(sec == "A", 20.0, 200.0)  # big between-section difference, none within
    mu_signal = 100.0 * np.exp(0.3 * rng.standard_normal(n)) * (sec == "A") + 100.0 * (sec == "B")
    counts = np.column_stack([rng.poisson(mu_offset), rng.poisson(mu_signal), rng.poisson(1e6, size=n)])
    a = ad.AnnData(counts.astype(np.float32), obs=pd.DataFrame({"section": sec}, index=[f"s{i}" for i in range(n)]))
    a.var_names = ["offset", "signal_in_A", "hk"]
    a.layers["counts"] = a.X.copy()
    a.X = np.log1p(a.X)  # X is not counts: the layer must be used
    noise_ceiling(a, layer="counts", genes=["offset", "signal_in_A"], key_added="nc")
    rel = a.varm["nc_reliability"]
    assert list(rel.columns) == ["A", "B"]
    assert abs(rel.loc["offset", "A"]) < 0.15
    assert abs(rel.loc["offset", "B"]) < 0.15
    assert rel.loc["signal_in_A", "A"] > 0.6
    assert abs(rel.loc["signal_in_A", "B"]) < 0.15
    assert np.isnan(rel.loc["hk"]).all()  # not evaluated
    assert a.uns["nc"]["params"]["genes"] == ["offset", "signal_in_A"]
    assert a.uns["nc"]["per_section"]["n_genes"].tolist() == [2, 2]


def test_seeded_and_copy():
    a, _ = _poisson_table(n=300, n_null=2)
    b = noise_ceiling(a, random_state=3, copy=True)
    assert "noise_ceiling" not in a.varm
    assert "noise_ceiling" not in a.uns
    noise_ceiling(a, random_state=3)
    pd.testing.assert_frame_equal(a.varm["noise_ceiling"], b.varm["noise_ceiling"])
    c = noise_ceiling(a, random_state=4, copy=True)
    assert not np.allclose(a.varm["noise_ceiling"].to_numpy(), c.varm["noise_ceiling"].to_numpy())


def _snapshot(a):
    return sorted(a.varm.keys()), sorted(a.uns.keys()), sorted(a.layers.keys())


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"layer": "missing"}, KeyError, "Available layers"),
        ({"layer": "frac"}, ValueError, "non-integer"),
        ({"layer": "counts", "genes": "nope"}, KeyError, "not a `var` column"),
        ({"layer": "counts", "genes": ["g0", "zz"]}, KeyError, "not in `var_names`"),
        ({"layer": "counts", "genes": []}, ValueError, "selects no gene"),
        ({"layer": "counts", "library_key": "batch"}, KeyError, "not found"),
        ({"layer": "counts", "key_added": ""}, ValueError, "key_added"),
    ],
)
def test_bad_input_writes_nothing(kw, err, match):
    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, size=(30, 4)).astype(np.float64)
    a = ad.AnnData(counts.copy(), var=pd.DataFrame(index=[f"g{i}" for i in range(4)]))
    a.layers["counts"] = counts
    a.layers["frac"] = counts + 0.5
    before = _snapshot(a)
    with pytest.raises(err, match=match):
        noise_ceiling(a, **kw)
    assert _snapshot(a) == before


def test_log_transformed_x_refused():
    a = ad.AnnData(np.ones((5, 2)))
    a.uns["log1p"] = {"base": None}
    with pytest.raises(ValueError, match="already log-transformed"):
        noise_ceiling(a)
    assert "noise_ceiling" not in a.varm
