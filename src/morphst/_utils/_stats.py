"""Column statistics shared by tl functions: z-scores (one rule: :func:`column_scale`), Pearson r, a fast kNN MI."""

from __future__ import annotations

import os

import numpy as np

#: Relative tolerance under which a column counts as constant (its standard deviation relative to its scale).
CONST_RTOL = 1e-10


#: Tolerance under which a column counts as constant when z-scoring: its standard deviation relative to
#: ``max(1, |mean|)`` (float rounding leaves ~1e-16 of spread in a column of equal values).
ZSCORE_RTOL = 1e-12


def column_scale(x, rows=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and scale of each column of ``x`` ``(n, p)`` over ``rows`` (``None``: all), and which are constant.

    The one z-scoring rule of morphst: mean and population standard deviation (``ddof=0``, as
    :func:`scanpy.pp.scale` and :class:`~sklearn.preprocessing.StandardScaler`) in float64; a column whose standard
    deviation is at most ``ZSCORE_RTOL * max(1, |mean|)`` is constant and gets scale 1 (as both do for a zero
    standard deviation). Returns ``(mean (p,), scale (p,), constant (p,) bool)``.
    """
    x = np.asarray(x)
    fit = x if rows is None else x[rows]
    mean = fit.mean(axis=0, dtype=np.float64)
    scale = fit.std(axis=0, dtype=np.float64)
    constant = ~(scale > ZSCORE_RTOL * np.maximum(1.0, np.abs(mean)))
    scale[constant] = 1.0
    return mean, scale, constant


def zscore(x, rows=None, *, dtype=np.float64, copy: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Column z-scores of ``x`` ``(n, p)`` with the statistics of ``rows`` (:func:`column_scale`), as ``dtype``.

    A constant column is exactly 0 on ``rows`` (elsewhere ``x - mean``, as scikit-learn's scaler gives).
    ``copy=False`` works in place when ``x`` is already an array of ``dtype``. Returns ``(z, non-constant mask)``.
    """
    mean, scale, constant = column_scale(x, rows)
    x = np.asarray(x)
    z = x if (not copy and x.dtype == np.dtype(dtype)) else np.array(x, dtype=dtype, copy=True)
    z -= mean.astype(z.dtype)
    z /= scale.astype(z.dtype)
    if constant.any():
        if rows is None:
            z[:, constant] = 0.0
        else:
            fitted = np.zeros(len(z), bool)
            fitted[rows] = True
            z[np.ix_(fitted, constant)] = 0.0
    return z, ~constant


def is_constant(y) -> np.ndarray:
    """Per column: ``True`` where all values are equal (up to floating point noise) or fewer than 2 are finite."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    sd = np.nanstd(y, axis=0) if y.shape[0] else np.zeros(y.shape[1])
    scale = np.nanmax(np.abs(y), axis=0, initial=0.0) if y.shape[0] else np.zeros(y.shape[1])
    n = np.isfinite(y).sum(axis=0)
    return (sd <= CONST_RTOL * np.maximum(scale, 1e-300)) | (n < 2)


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each column of ``a`` with the same column of ``b`` (2-D, same shape), float64.

    NaN where either column is constant (:func:`is_constant`), so a constant predictor never scores; equal to
    :func:`scipy.stats.pearsonr` elsewhere.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    const = is_constant(a) | is_constant(b)
    da = a - a.mean(axis=0)
    db = b - b.mean(axis=0)
    num = (da * db).sum(axis=0)
    den = np.sqrt((da**2).sum(axis=0) * (db**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    r = np.clip(r, -1.0, 1.0)
    r[const] = np.nan
    return r


def abs_pearson(expr: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """|Pearson r| of every gene (columns of ``expr``) with every feature (columns of ``feats``), float64.

    Both are standardised and multiplied, ``|Z_g^T Z_f| / n``. A constant column gives 0.

    Returns
    -------
    ndarray, shape ``(n_genes, n_features)``.
    """
    zg, _ = zscore(expr)
    zf, _ = zscore(feats)
    r = zg.T @ zf / zg.shape[0]
    return np.clip(np.abs(r), 0.0, 1.0)


def _rows_per_chunk(chunk: int, n_cols: int) -> int:
    """At most ``chunk`` rows, and at most 2**22 values per chunk (32 MiB in float64), at least 256 rows."""
    return int(max(256, min(chunk, 2**22 // max(n_cols, 1))))


def abs_pearson_chunked(expr: np.ndarray, feats, rows: np.ndarray | None = None, chunk: int = 65_536) -> np.ndarray:
    """:func:`abs_pearson` for many rows, in one pass over row chunks of ``feats``.

    ``expr`` (n_obs × n_genes) and ``feats`` (n_obs × n_features, e.g. a float32 ``obsm`` entry, never copied whole)
    are read at ``rows`` (``None``: all). Each chunk is shifted by the first chunk's column means and multiplied in
    float32; the sums are kept in float64 and the covariance taken from them. Constant columns give 0. Agrees with
    :func:`abs_pearson` to about 1e-5.
    """
    every = rows is None  # read contiguous slices, not gathered rows
    rows = np.arange(feats.shape[0]) if every else np.asarray(rows)
    chunk = _rows_per_chunk(chunk, feats.shape[1] + expr.shape[1])
    first = rows[: min(chunk, rows.size)]
    a = np.asarray(expr[first], dtype=np.float64).mean(axis=0).astype(np.float32)
    b = np.asarray(feats[first], dtype=np.float64).mean(axis=0).astype(np.float32)
    cross = np.zeros((expr.shape[1], feats.shape[1]))
    sg, sgg = np.zeros(expr.shape[1]), np.zeros(expr.shape[1])
    sf, sff = np.zeros(feats.shape[1]), np.zeros(feats.shape[1])
    for s in range(0, rows.size, chunk):
        idx = slice(s, min(s + chunk, rows.size)) if every else rows[s : s + chunk]
        g = np.asarray(expr[idx], dtype=np.float32) - a
        f = np.asarray(feats[idx], dtype=np.float32) - b
        cross += g.T @ f
        sg += g.sum(axis=0, dtype=np.float64)
        sgg += np.einsum("ij,ij->j", g, g, dtype=np.float64)
        sf += f.sum(axis=0, dtype=np.float64)
        sff += np.einsum("ij,ij->j", f, f, dtype=np.float64)
    n = rows.size
    mg, mf = sg / n, sf / n
    vg = np.maximum(sgg / n - mg**2, 0.0)
    vf = np.maximum(sff / n - mf**2, 0.0)
    okg = np.sqrt(vg) > 1e-12 * np.maximum(1.0, np.abs(mg + a))
    okf = np.sqrt(vf) > 1e-12 * np.maximum(1.0, np.abs(mf + b))
    cov = cross / n - np.outer(mg, mf)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.outer(np.sqrt(vg), np.sqrt(vf))
    r[~okg] = 0.0
    r[:, ~okf] = 0.0
    return np.clip(np.abs(r), 0.0, 1.0)


def _knn_radius_1d(v: np.ndarray, k: int) -> np.ndarray:
    """Distance of each value of sorted ``v`` to its ``k``-th nearest other value (1-D, exact)."""
    m = v.size
    d = np.full((m, 2 * k), np.inf)
    for j in range(1, k + 1):
        gap = v[j:] - v[:-j]
        d[j:, j - 1] = gap  # j-th value to the left
        d[:-j, k + j - 1] = gap  # j-th value to the right
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def _count_within(s: np.ndarray, c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Number of values of sorted ``s`` within ``r`` of ``c``, compared as a tree search does: ``(s - c)² <= r²``.

    ``c ± r`` is rounded, so the bounds found by bisection are moved where the squared distance says so.
    """
    n = s.size
    r2 = r * r

    def inside(pos):
        return (s[np.clip(pos, 0, n - 1)] - c) ** 2 <= r2

    lo = np.searchsorted(s, c - r, side="left")
    hi = np.searchsorted(s, c + r, side="right")  # one past the last value inside
    for _ in range(1):  # the values are jittered, so a rounded bound is off by one place at most
        lo = np.where((lo > 0) & inside(lo - 1), lo - 1, lo)
        lo = np.where((lo < n) & ~inside(lo), lo + 1, lo)
        hi = np.where((hi > 0) & ~inside(hi - 1), hi - 1, hi)
        hi = np.where((hi < n) & inside(hi), hi + 1, hi)
    return hi - lo


def mutual_info_1d(
    x: np.ndarray, y: np.ndarray, *, n_neighbors: int = 3, random_state: int = 0, n_jobs: int | None = None
) -> np.ndarray:
    """Mutual information (nats) of each continuous column of ``x`` with discrete labels ``y``, one column at a time.

    The estimator of scikit-learn's :func:`~sklearn.feature_selection.mutual_info_classif` (Ross, *PLoS ONE* 2014:
    ``ψ(N) + <ψ(k)> − <ψ(N_y)> − <ψ(m)>``, columns scaled to unit standard deviation and jittered by 1e-10 of
    their mean absolute value, the same draws), with the neighbour searches done on sorted values instead of trees:
    the ``k`` nearest values of a point in 1-D lie among the ``k`` on either side of it, and distances are compared
    squared as the tree does; values agree with scikit-learn's to ~1e-6 nats (an input an ulp
    apart can move one neighbour count at a tie). Time ``O(n log n)`` per column instead of a tree per class and column; memory two
    float64 copies of ``x``. ``n_jobs`` threads share the columns. The relevance axis of :func:`morphst.tl.quadrants`
    and :func:`morphst.tl.gene_quadrants`.
    """
    from scipy.special import digamma
    from sklearn.preprocessing import scale
    from sklearn.utils import check_random_state

    # scikit-learn's preprocessing, step for step (same scaling, same jitter draws)
    x = np.asarray(x).astype(np.float64, copy=True)
    cols = np.ones(x.shape[1], dtype=bool)
    x[:, cols] = scale(x[:, cols], with_mean=False, copy=False)
    means = np.maximum(1, np.mean(np.abs(x[:, cols]), axis=0))
    x[:, cols] += 1e-10 * means * check_random_state(random_state).standard_normal(size=x.shape)
    x = np.asfortranarray(x)  # columns contiguous
    y = np.asarray(y)
    _, codes = np.unique(y, return_inverse=True)
    groups = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    label_counts = np.bincount(codes).astype(np.float64)[codes]
    keep = label_counts > 1
    n_keep = int(keep.sum())
    ks = {int(g): min(n_neighbors, int(idx.size) - 1) for g, idx in enumerate(groups) if idx.size > 1}
    k_all = np.zeros(codes.size)
    for g, k in ks.items():
        k_all[groups[g]] = k
    const = digamma(n_keep) + digamma(k_all[keep]).mean() - digamma(label_counts[keep]).mean()

    def one(j: int) -> float:
        c = x[:, j]
        order = np.argsort(c)  # one sort per column: each class's values come out sorted too
        sc = c[order]
        cls = codes[order]
        radius = np.zeros(c.size)
        for g, k in ks.items():
            pos = np.flatnonzero(cls == g)
            radius[order[pos]] = np.nextafter(_knn_radius_1d(sc[pos], k), 0)
        kept = keep[order]
        s_keep = sc[kept]  # sorted values of the observations kept
        m_all = _count_within(s_keep, s_keep, radius[order][kept])
        return max(0.0, const - digamma(m_all).mean())

    if n_jobs is not None and n_jobs != 1 and x.shape[1] > 1:
        from concurrent.futures import ThreadPoolExecutor

        workers = os.cpu_count() if n_jobs < 0 else n_jobs
        with ThreadPoolExecutor(max_workers=workers) as pool:  # numpy's sorts release the GIL
            return np.fromiter(pool.map(one, range(x.shape[1])), dtype=np.float64, count=x.shape[1])
    out = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        out[j] = one(j)
    return out
