""":func:`quadrants`: morphological features on the relevance × shared-information plane."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_copy, doc_data, inject_docs
from ..._utils import check_obsm, check_unique_var_names, get_adata, records_params
from ..._utils._hints import rep_hint
from ..._utils._memory import release_freed_memory
from ..._utils._stats import abs_pearson, abs_pearson_chunked, zscore
from . import _common as c

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def _shared_null_all_rows(expr, feats, rows, null_cols, n_perms, rng, chunk: int = 65_536):
    """Shared-axis null on every annotated row: max |r| over genes of the null features, gene rows shuffled.

    Float32 products over row chunks (``feats`` is read at ``null_cols`` only, never copied whole).
    """
    zg = np.empty((rows.size, expr.shape[1]), dtype=np.float32)
    zf = np.empty((rows.size, null_cols.size), dtype=np.float32)
    every = rows.size == feats.shape[0]  # all rows: contiguous slices instead of gathers
    for s in range(0, rows.size, chunk):
        idx = slice(s, min(s + chunk, rows.size)) if every else rows[s : s + chunk]
        zg[s : s + chunk] = expr[idx]
        zf[s : s + chunk] = np.asarray(feats[idx])[:, null_cols]
    for z in (zg, zf):
        zscore(z, dtype=np.float32, copy=False)

    def draw(rng_):
        perm = rng_.permutation(rows.size)
        return np.abs(zg[perm].T @ zf / rows.size).max(axis=0).astype(np.float64)

    return draw


@inject_docs(data=doc_data, copy=doc_copy)
def quadrants(
    data: SpatialData | AnnData,
    use_rep: str,
    annotation_key: str = Key.ANNOTATION,
    *,
    genes: Literal["highly_variable"] | Sequence[str] = "highly_variable",
    layer: str | None = None,
    relevance: Literal["mutual_info"] = "mutual_info",
    shared: Literal["max_abs_pearson"] = "max_abs_pearson",
    thresholds: Literal["permutation", "median"] | tuple[float, float] = "permutation",
    n_perms: int = 100,
    quantile: float = 0.95,
    n_null_features: int | None = 32,
    n_neighs: int = 3,
    max_obs: int | None = c.MAX_OBS,
    table_key: str = Key.TABLE,
    random_state: int = 0,
    n_jobs: int | None = None,
    key_added: str = Key.QUADRANTS,
    copy: bool = False,
) -> AnnData | None:
    """Place every morphological feature in the translation–integration quadrants.

    Implements Box 2 of Chelebian, Avenel & Wählby, *Nat. Commun.* 2025: per feature (column of
    ``obsm[use_rep]``), *relevance* is the mutual information with the annotation (the kNN estimator of Ross 2014
    as scikit-learn's :func:`~sklearn.feature_selection.mutual_info_classif` computes it, seeded, with the neighbour
    searches on sorted values: equal to it within ~1e-6 nats) and *shared information* is the
    largest |Pearson r| with any of ``genes`` (and which gene). With thresholds on both axes each feature falls in
    one quadrant: I ``"translation"`` (relevant, shared), II ``"integration"`` (relevant, not shared), III
    ``"noise"`` (neither), IV ``"overestimation"`` (shared, not relevant).

    Spots with a missing annotation are left out of both axes (their number is in ``params``). Cell-level data:
    with more than ``max_obs`` annotated observations, relevance and its permutation null are estimated on a seeded
    subsample of ``max_obs`` of them, and on a second, independent subsample the quadrants are found again: their
    agreement and the largest difference of a quadrant's share are stored in ``uns[key_added]['stability']``, with
    a warning when that difference exceeds 5 %. Shared information is computed on every annotated observation
    (float32 products over row chunks; the features are never copied whole), its null from ``n_perms`` shuffles of
    the gene rows against ``n_null_features`` features.

    Parameters
    ----------
    {data}
    use_rep
        ``obsm`` key of the morphological features, e.g. ``"X_densenet121"`` (from :func:`morphst.tl.embed_patches`).
    annotation_key
        ``obs`` column with the task's labels (categorical; at least 2 categories), e.g. clusters or pathology.
    genes
        ``"highly_variable"`` (``var['highly_variable']``, from :func:`scanpy.pp.highly_variable_genes`) or a list
        of gene names: the genes the shared axis is measured against.
    layer
        Layer with the expression used for correlations (default: ``X``). It should be log-normalised
        (e.g. log1p of counts per 10,000); a warning is issued when it looks like raw counts.
    relevance, shared
        The measures of the two axes; only ``"mutual_info"`` and ``"max_abs_pearson"``.
    thresholds
        ``"permutation"`` (default): the ``quantile`` of a pooled permutation null, so that *relevant* and *shared*
        mean "above chance". Relevance null: the mutual information of features with shuffled labels, pooled over
        ``n_perms`` permutations × ``n_null_features`` features drawn at random (seeded) once. Shared null: the max
        |r| over ``genes`` after shuffling the spots (rows) of all features relative to expression, pooled over
        ``n_perms`` permutations × all features (beyond ``max_obs`` observations: × the ``n_null_features``
        features). ``"median"``: the median of each axis over features. A pair ``(x, y)``: fixed thresholds for
        shared information (x, |r|, in ``[0, 1)``) and relevance (y, nats, in ``[0, ln(n_categories))``). A feature
        is relevant (shared) when its value is strictly above the threshold.
    n_perms
        Permutations for ``thresholds="permutation"``.
    quantile
        Quantile of the pooled null used as threshold (0.95: the 95th percentile).
    n_null_features
        Features used for the relevance null (it hardly depends on the feature). ``None``: all features.
    n_neighs
        Neighbours of the mutual-information estimator.
    max_obs
        Annotated observations beyond which relevance is estimated on a seeded subsample of this size (>= 100);
        ``None``: always on all of them (``O(n log n)`` per feature and permutation).
    random_state
        Seed of the mutual-information estimator (its jitter), of the permutations and of the subsamples.
    n_jobs
        Threads of the mutual-information estimator (they share the features).
    key_added
        Key in ``uns`` and ``varm``.
    {copy}

    Returns
    -------
    ``None``, or a copy of the AnnData when ``copy=True``. Sets:

    ``.uns[key_added]['features']`` : DataFrame, shape ``(n_features, 4)``
        Per feature (index: column number as a string): ``relevance`` (nats), ``shared`` (max |r|), ``best_gene``,
        ``quadrant`` (ordered categorical: translation, integration, noise, overestimation).
    ``.uns[key_added]['thresholds']`` : dict
        ``{'relevance': y, 'shared': x}``.
    ``.uns[key_added]['shares']`` : dict
        Fraction of features per quadrant.
    ``.uns[key_added]['stability']`` : dict
        Only when subsampled: ``agreement`` (fraction of features in the same quadrant on both subsamples),
        ``max_share_difference``, ``tolerance`` (0.05), ``shares_second_subsample``, ``stable``.
    ``.uns[key_added]['params']`` : dict
        The parameters, the genes used, the number of spots used / left out and the subsample (size and rule).
    ``.varm[key_added]`` : ndarray, shape ``(n_vars, n_features)``, float32
        |Pearson r| of each gene with each feature; NaN in the rows of genes not used.

    Raises
    ------
    KeyError
        If ``use_rep``, ``annotation_key``, ``layer`` or a gene is missing, or ``genes="highly_variable"`` and
        ``var['highly_variable']`` does not exist.
    ValueError
        If the annotation has fewer than 2 categories, ``var_names`` has duplicates, fixed thresholds lie outside
        the range of their axis, or an option is invalid. Nothing is written then.
    """
    start = logg.info(f"computing quadrants of {use_rep!r} against {annotation_key!r}")
    release_freed_memory()  # what earlier steps freed: this step's peak sits on the data alone
    adata = get_adata(data, table_key)
    # ---- validate everything before writing anything
    if relevance != "mutual_info":
        msg = f"`relevance` must be 'mutual_info', got {relevance!r}."
        raise ValueError(msg)
    if shared != "max_abs_pearson":
        msg = f"`shared` must be 'max_abs_pearson', got {shared!r}."
        raise ValueError(msg)
    opt = c.check_options(thresholds, n_perms, quantile, n_neighs, max_obs)
    if n_null_features is not None and n_null_features < 1:
        msg = f"`n_null_features` must be a positive integer or None, got {n_null_features!r}."
        raise ValueError(msg)
    check_unique_var_names(adata, "mst.tl.quadrants")
    feats_all = check_obsm(adata, use_rep, hint=rep_hint(use_rep))
    mask, y, cats = c.labels(adata, annotation_key)
    opt.check_fixed(len(cats), x_name="|Pearson r|", x_min=0.0)
    gene_names = c.resolve_genes(adata, genes)
    # float32 stays float32 (every use reads it as float32 or casts its rows to float64: the same values)
    expr_all = c.expression(adata, gene_names, layer, keep_float32=True)
    c.warn_if_counts(expr_all, layer)
    used = np.flatnonzero(mask)
    n_obs, n_feat = used.size, feats_all.shape[1]
    if n_obs <= opt.n_neighs:
        msg = f"Only {n_obs} annotated spots; need more than `n_neighs`={opt.n_neighs}."
        raise ValueError(msg)
    rel = c.relevance_rows(n_obs, opt.max_obs, random_state, n_jobs, opt.n_neighs)
    if rel.subsampled:
        logg.info(f"    relevance on a seeded subsample of {rel.rows.size} of {n_obs} annotated observations")
    axes = _Axes.compute(rel, expr_all, feats_all, mask, used, y, random_state)
    mi, shared_v = axes.mi, axes.r.max(axis=0)
    best = np.asarray(gene_names, dtype=object)[axes.r.argmax(axis=0)]
    thr_shared, thr_rel, null_info = _thresholds(opt, axes, shared_v, expr_all, feats_all, used, n_null_features)

    quad = c.assign(mi > thr_rel, shared_v > thr_shared)
    entry_extra = {}
    if rel.subsampled:
        feats2 = np.asarray(feats_all[used[rel.second]], dtype=np.float64)
        quad2 = c.assign(rel.mi(feats2, y[rel.second], random_state) > thr_rel, shared_v > thr_shared)
        entry_extra["stability"] = c.stability(quad, quad2, f"{n_feat} features of {use_rep!r}")
    df = pd.DataFrame(
        {"relevance": mi.astype(np.float64), "shared": shared_v, "best_gene": best.astype(str), "quadrant": quad},
        index=pd.Index([str(i) for i in range(n_feat)], name="feature"),
    )
    varm = np.full((adata.n_vars, n_feat), np.nan, dtype=np.float32)
    varm[adata.var_names.get_indexer(gene_names)] = axes.r.astype(np.float32)
    shares = c.shares(quad)
    params = records_params(
        use_rep=use_rep,
        annotation_key=annotation_key,
        categories=cats,
        genes=gene_names,
        layer=layer,
        relevance=relevance,
        shared=shared,
        **opt.record(),
        n_null_features=n_null_features,
        null=_null_text(opt.mode, rel.subsampled),
        random_state=random_state,
        n_obs_used=int(n_obs),
        n_obs_excluded_missing_annotation=int((~mask).sum()),
        **rel.record(n_obs, random_state),
        **null_info,
    )
    entry = {
        "features": df,
        "thresholds": {"relevance": float(thr_rel), "shared": float(thr_shared)},
        "shares": shares,
        **entry_extra,
        "params": params,
    }
    summary = f"quadrants of {n_feat} features (" + ", ".join(f"{q} {v:.0%}" for q, v in shares.items()) + ")"
    return c.write(adata, key_added, entry, copy=copy, start=start, summary=summary, varm=varm)


@dataclass
class _Axes:
    """The two axes of :func:`quadrants` and what their nulls need."""

    #: features (float64) and labels of the rows that relevance is estimated on (the subsample, or every annotated row)
    feats: np.ndarray
    y: np.ndarray
    #: expression of the annotated rows (``None`` when subsampled: the shared-axis null then reads ``expr_all``)
    expr: np.ndarray | None
    #: |Pearson r|, genes × features, on every annotated row
    r: np.ndarray
    #: mutual information of each feature with the labels (nats)
    mi: np.ndarray
    rel: object
    random_state: int

    @classmethod
    def compute(cls, rel, expr_all, feats_all, mask, used, y, random_state: int) -> _Axes:
        if rel.subsampled:
            feats = np.asarray(feats_all[used[rel.rows]], dtype=np.float64)
            y_rel, expr = y[rel.rows], None
            r = abs_pearson_chunked(expr_all, feats_all, None if mask.all() else used)  # every annotated row
        else:
            feats = np.asarray(feats_all[mask], dtype=np.float64)
            expr, y_rel = np.asarray(expr_all[mask], dtype=np.float64), y
            r = abs_pearson(expr, feats)
        # relevance: mutual information with the annotation; shared information: max |r| over genes
        mi = rel.mi(feats, y_rel, random_state)
        return cls(feats, y_rel, expr, r, mi, rel, random_state)


def _thresholds(opt, ax: _Axes, shared_v, expr_all, feats_all, used, n_null_features):
    """``(shared, relevance)`` thresholds (fixed, medians, or ``quantile`` of the permutation nulls) and null sizes."""
    if opt.mode == "fixed":
        return *opt.fixed, {}
    if opt.mode == "median":
        return float(np.median(shared_v)), float(np.median(ax.mi)), {}
    rel, feats, y_rel, random_state = ax.rel, ax.feats, ax.y, ax.random_state
    n_obs, n_feat = used.size, feats_all.shape[1]
    rng = np.random.default_rng(random_state)
    n_null = n_feat if n_null_features is None else min(int(n_null_features), n_feat)
    null_cols = np.sort(rng.choice(n_feat, size=n_null, replace=False))
    if rel.subsampled:
        x_null = _shared_null_all_rows(expr_all, feats_all, used, null_cols, opt.n_perms, rng)
    else:
        zg, _ = zscore(ax.expr)
        zf, _ = zscore(feats)

        def x_null(rng_):
            perm = rng_.permutation(n_obs)
            return np.abs(zg.T @ zf[perm] / n_obs).max(axis=0)

    null_mi, null_r = c.permutation_null(
        opt.n_perms,
        rng,
        y_rel.size,
        lambda perm, p: rel.mi(feats[:, null_cols], y_rel[perm], random_state + p),
        x_null,
    )
    null_info = {"n_null_relevance": int(null_mi.size), "n_null_shared": int(null_r.size)}
    return float(np.quantile(null_r, opt.quantile)), float(np.quantile(null_mi, opt.quantile)), null_info


def _null_text(mode: str, subsampled: bool) -> str | None:
    """How the permutation nulls were drawn (``params['null']``); ``None`` without a permutation null."""
    if mode != "permutation":
        return None
    return (
        "relevance: MI with shuffled labels, pooled over permutations x a seeded subset of features; shared: max "
        "|r| over genes after shuffling the spots of "
        + ("the same subset of features" if subsampled else "all features")
        + ", pooled over permutations x features"
    )
