"""mst.tl.metrics against scipy / numpy reference values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

import morphst as mst

m = mst.tl.metrics


@pytest.fixture
def yy():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 6))
    p = y + rng.normal(scale=0.7, size=y.shape)
    return y, p


def test_pcc_equals_scipy(yy):
    y, p = yy
    want = np.array([scipy.stats.pearsonr(y[:, j], p[:, j]).statistic for j in range(y.shape[1])])
    np.testing.assert_allclose(m.pcc(y, p), want, rtol=1e-12)
    assert m.pcc(y[:, 0], p[:, 0]) == pytest.approx(want[0], rel=1e-12)


def test_errors_equal_numpy(yy):
    y, p = yy
    np.testing.assert_allclose(m.mae(y, p), np.mean(np.abs(y - p), axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.mse(y, p), np.mean((y - p) ** 2, axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.rmse(y, p), np.sqrt(np.mean((y - p) ** 2, axis=0)), rtol=1e-12)
    # hand-computed: errors 1, -2, 3 -> MAE 2, MSE 14/3
    assert m.mae([0.0, 0.0, 0.0], [1.0, -2.0, 3.0]) == pytest.approx(2.0)
    assert m.mse([0.0, 0.0, 0.0], [1.0, -2.0, 3.0]) == pytest.approx(14 / 3)
    assert m.rmse([0.0, 0.0, 0.0], [1.0, -2.0, 3.0]) == pytest.approx(np.sqrt(14 / 3))


def test_perfect_and_constant_predictions(yy):
    y, _ = yy
    np.testing.assert_allclose(m.pcc(y, y), 1.0)
    np.testing.assert_allclose(m.pcc(y, 2 * y + 3), 1.0)
    np.testing.assert_allclose(m.pcc(y, -y), -1.0)
    const = np.tile(y.mean(axis=0), (len(y), 1))  # the training-mean predictor
    assert np.isnan(m.pcc(y, const)).all()


def test_summarize_excludes_and_counts_constant_genes(yy):
    y, p = yy
    y = y.copy()
    p = p.copy()
    y[:, 1] = 5.0  # constant observation
    p[:, 2] = 0.3  # constant prediction
    s = m.summarize(y, p)
    r = m.pcc(y, p)
    assert np.isnan(r[1])
    assert np.isnan(r[2])
    assert s["n_excluded"] == 2
    assert s["n_constant_in_test"] == 1
    assert s["n_genes"] == 6
    assert s["pcc"] == pytest.approx(np.mean(r[[0, 3, 4, 5]]))
    t = m.gene_table(y, p, genes=list("abcdef"))
    assert t.loc["b", "constant_in_test"]
    assert not t.loc["c", "constant_in_test"]


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        m.pcc(np.zeros((3, 2)), np.zeros((3, 3)))
