"""Spatial components of the residual (``method="maf"`` and ``"multispati"``), a permutation null, held-out checks.

The residual ``R`` (morphology centred per section, standardised, minus its cross-fitted ridge prediction from
expression) is reduced to its leading principal directions on the training rows, then:

- ``"maf"`` (``whiten=True``): maximum-autocorrelation factors (Switzer & Green 1984): the directions are whitened
  and the criterion is Moran's I of the component (``W`` the row-standardised spatial weights among the training
  rows). Whitening amplifies low-variance directions, so the cap is well below the spots per section: a tenth of
  the smallest section's training spots (at most :data:`MAX_DIMS`).
- ``"multispati"`` (``whiten=False``): MULTISPATI's criterion (Dray, Saïd & Débias 2008): a unit-norm loading ``u``
  is scored by ``uᵀ sym(Rᵀ W R) u / n`` = variance × Moran's I of ``R u``; cap :data:`MAX_DIMS`.

Significance: the spot positions are permuted within each section (rows of the residual shuffled over the same
graph) :data:`N_PERMUTATIONS` times; each permutation's *largest* eigenvalue forms the null of a selected component
(the selection is accounted for: a component is compared with the best that chance arrangement offers). The
p-value of component ``k`` is ``(1 + #{null ≥ λ_k}) / (1 + n_permutations)``. With held-out sections (below) a
component must also keep its spatial coherence there: the one-sided p-value of its held-out Moran's I under the
normality null (Cliff & Ord 1981; sections left out one at a time are pooled by averaging) must be ``≤ alpha``
too. The significant components are the leading run that passes both.

Held-out Moran's I: on training sections left out one at a time (with two or more), the components are refit on
the others, matched to the full fit by the largest absolute cosine of their loadings, and the matched component's
Moran's I on the left-out section is recorded (mean over sections); spots of sections outside the training spots
are scored directly by the full fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._linear import neighbour_lists

#: Leading principal directions of the residual kept before the criterion (a dimension cap).
MAX_DIMS = 64
#: Permutations of the spot positions within sections (the null of the criterion).
N_PERMUTATIONS = 99


def fit_spatial_components(
    r: np.ndarray,
    train: np.ndarray,
    edges,
    groups: np.ndarray | None,
    n_components: int | None,
    *,
    alpha: float,
    n_permutations: int,
    random_state: int,
    whiten: bool = True,
) -> tuple[np.ndarray, dict]:
    """Spatial components of ``r`` ``(n, p)`` (see the module docstring); returns ``(z, record)``.

    ``n_components=None`` keeps the significant components (possibly none). ``record`` holds ``components`` (a
    DataFrame per component: ``criterion``, ``variance``, ``moran_I``, ``p_value``, ``moran_I_held_out``,
    ``p_value_held_out``, ``significant``), ``loadings`` ``(p, k)``, ``centre`` ``(p,)``, ``null`` (the
    permutation maxima), ``n_significant`` and ``n_dims``.
    """
    n = len(r)
    sec = np.zeros(n, np.int64) if groups is None else np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    anchors, wa = _anchor_graph(edges, train, n)
    centre = r[anchors].mean(axis=0)
    basis = _cap_basis(r[anchors] - centre, _cap(sec[anchors]) if whiten else MAX_DIMS)
    if whiten:  # maximum-autocorrelation factors: the criterion is Moran's I alone
        basis = basis / ((r[anchors] - centre) @ basis).std(axis=0)
    y = (r[anchors] - centre) @ basis
    vals, vecs = _eig(y, wa)
    null = _null_maxima(y, wa, sec[anchors], n_permutations, random_state)
    pvals = (1 + (null[None, :] >= vals[:, None] - 1e-12 * abs(vals[:, None])).sum(axis=1)) / (1 + len(null))
    k_max = len(vals) if n_components is None else min(int(n_components), len(vals))
    loadings = basis @ vecs[:, :k_max]
    if k_max:  # sign: the largest loading positive
        loadings *= np.sign(loadings[np.abs(loadings).argmax(axis=0), np.arange(k_max)])
    z = (r - centre) @ loadings
    variance = z[anchors].var(axis=0)
    i_held, p_held = _held_out(r, z, loadings, train, edges, sec, anchors, wa, k_max)
    sig = (pvals[:k_max] <= alpha) & ~(p_held > alpha)  # NaN (no held-out section): the permutation test alone
    n_sig = int(np.argmin(np.append(sig, False)))  # the leading run of significant components
    k = n_sig if n_components is None else k_max
    comp = pd.DataFrame(
        {
            "criterion": vals[:k],
            "variance": variance[:k],
            "moran_I": np.divide(vals[:k], variance[:k], out=np.zeros(k), where=variance[:k] > 0),
            "p_value": pvals[:k],
            "moran_I_held_out": i_held[:k],
            "p_value_held_out": p_held[:k],
            "significant": sig[:k] & (np.arange(k) < n_sig),
        },
        index=pd.RangeIndex(1, k + 1, name="component"),
    )
    loadings, z = loadings[:, :k], z[:, :k]
    record = {
        "components": comp,
        "loadings": loadings,
        "centre": centre,
        "null": null,
        "n_significant": n_sig,
        "n_dims": basis.shape[1],
    }
    return z, record


def _anchor_graph(edges, train: np.ndarray, n: int) -> tuple[np.ndarray, sp.csr_matrix]:
    """Training rows with a training neighbour, and the row-standardised weights among them ``(n_a, n_a)``."""
    indptr, nbrs = neighbour_lists(edges, train, n)
    deg = np.diff(indptr)
    anchors = np.flatnonzero(train & (deg > 0))
    if len(anchors) < 4:
        msg = f"Only {len(anchors)} training rows have a spatial neighbour among the training rows; 4 are needed."
        raise ValueError(msg)
    pos = np.full(n, -1, dtype=np.int64)
    pos[anchors] = np.arange(len(anchors))
    rows = np.repeat(np.arange(n), deg)
    keep = pos[rows] >= 0
    w = sp.csr_matrix(
        (1.0 / deg[rows[keep]], (pos[rows[keep]], pos[nbrs[keep]])), shape=(len(anchors), len(anchors))
    )
    return anchors, w


def _cap(sec: np.ndarray) -> int:
    """Dimension cap of the whitened criterion: a tenth of the smallest section's spots (at least 2)."""
    return int(min(MAX_DIMS, max(2, np.bincount(sec)[np.bincount(sec) > 0].min() // 10)))


def _cap_basis(rc: np.ndarray, cap: int = MAX_DIMS) -> np.ndarray:
    """Orthogonal ``(p, q)`` leading principal directions of the centred rows (``q <= cap``, variance > 0)."""
    # eigenvectors of the p x p scatter (not an SVD of the n x p rows: n may be 10^5 or more)
    vals, vecs = np.linalg.eigh(rc.T @ rc)
    order = np.argsort(vals)[::-1]
    vals, vecs = np.clip(vals[order], 0, None), vecs[:, order]
    keep = vals > 1e-14 * max(float(vals.max()) if len(vals) else 0.0, 1e-300)
    vt = vecs.T
    q = min(int(keep.sum()), cap)
    if q == 0:
        msg = (
            "Nothing of the morphology features is left once expression's prediction is removed (every residual "
            "column is constant on the training spots); the features carry no information beyond expression here."
        )
        raise ValueError(msg)
    return vt[:q].T


def _criterion(y: np.ndarray, wa: sp.csr_matrix) -> np.ndarray:
    """``sym(yᵀ W y) / n`` ``(q, q)``: its quadratic form at a unit vector is variance × Moran's I of that direction."""
    c = y.T @ (wa @ y) / len(y)
    return 0.5 * (c + c.T)


def _eig(y: np.ndarray, wa: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    vals, vecs = np.linalg.eigh(_criterion(y, wa))
    order = np.argsort(vals)[::-1]
    return vals[order], vecs[:, order]


def _null_maxima(y, wa, sec, n_permutations: int, random_state: int) -> np.ndarray:
    """Largest eigenvalue of the criterion with the rows permuted within each section, per permutation."""
    rng = np.random.default_rng(random_state)
    y, wa = y.astype(np.float32), wa.astype(np.float32)  # float32 halves the cost of the permutations
    blocks = [np.flatnonzero(sec == s) for s in np.unique(sec)]
    out = np.empty(n_permutations)
    perm = np.arange(len(y))
    for b in range(n_permutations):
        for idx in blocks:
            perm[idx] = idx[rng.permutation(len(idx))]
        out[b] = np.linalg.eigvalsh(_criterion(y[perm], wa).astype(np.float64))[-1]
    return out


def morans_i(z: np.ndarray, wa: sp.csr_matrix) -> np.ndarray:
    """Moran's I of each column of ``z`` ``(n_a, k)`` with the row-standardised weights ``wa`` (centred on the rows)."""
    zc = z - z.mean(axis=0)
    den = (zc**2).sum(axis=0)
    return np.divide((zc * (wa @ zc)).sum(axis=0), den, out=np.full(z.shape[1], np.nan), where=den > 0)


def moran_null(wa: sp.csr_matrix) -> tuple[float, float]:
    """Mean and variance of Moran's I under the normality null (Cliff & Ord 1981) for the weights ``wa``."""
    n = wa.shape[0]
    s0 = float(wa.sum())
    sym = wa + wa.T
    s1 = 0.5 * float(sym.multiply(sym).sum())
    s2 = float(((np.asarray(wa.sum(axis=1)).ravel() + np.asarray(wa.sum(axis=0)).ravel()) ** 2).sum())
    mean = -1.0 / (n - 1)
    var = (n * n * s1 - n * s2 + 3 * s0 * s0) / (s0 * s0 * (n * n - 1)) - mean * mean
    return mean, var


def _held_out(r, z, loadings, train, edges, sec, anchors, wa, k) -> tuple[np.ndarray, np.ndarray]:
    """Moran's I of each component on sections not used to fit and its one-sided p-value (analytic null).

    See the module docstring; NaN when there is no such section.
    """
    from scipy.stats import norm

    nan = np.full(k, np.nan)
    if k == 0:
        return nan, nan
    n = len(r)
    outside = ~train & ~np.isin(sec, np.unique(sec[train]))
    if outside.sum() >= 4:
        rows, w_out = _anchor_graph(edges, outside, n)
        i_out = morans_i(z[rows], w_out)
        mean, var = moran_null(w_out)
        return i_out, norm.sf((i_out - mean) / np.sqrt(var))
    sec_a = sec[anchors]
    names = np.unique(sec_a)
    if len(names) < 2:
        return nan, nan
    vals, means, variances = [], [], []
    for s in names:
        fit, test = sec_a != s, sec_a == s
        wf, wt = wa[fit][:, fit], wa[test][:, test]
        rf = r[anchors[fit]]
        mu = rf.mean(axis=0)
        basis = _cap_basis(rf - mu)
        _, vecs = _eig((rf - mu) @ basis, wf)
        lf = basis @ vecs[:, : min(vecs.shape[1], 2 * k + 2)]
        match = np.abs(loadings.T @ lf).argmax(axis=1)  # the fold's component closest to each full component
        vals.append(morans_i((r[anchors[test]] - mu) @ lf[:, match], wt))
        m, v = moran_null(wt)
        means.append(m)
        variances.append(v)
    i_mean = np.mean(np.vstack(vals), axis=0)
    z_score = (i_mean - np.mean(means)) / np.sqrt(np.sum(variances) / len(names) ** 2)
    return i_mean, norm.sf(z_score)
