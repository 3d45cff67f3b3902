"""The translation–integration quadrant framework (Chelebian, Avenel & Wählby, *Nat. Commun.* 2025, Box 1 and 2).

Every morphological feature is placed on two axes: its *relevance* to a task (mutual information with an
annotation) and the information it *shares* with expression (largest |Pearson r| with any of a set of genes).
Thresholds on both axes give four quadrants:

- I ``"translation"``: relevant and shared (use to predict expression);
- II ``"integration"``: relevant, not shared (adds to expression when finding domains);
- III ``"noise"``: neither;
- IV ``"overestimation"``: shared but not relevant (a high prediction score that says nothing about the task).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .. import _logging as logg
from .._utils import check_obs_column, check_obsm, check_unique_var_names, get_adata, list_keys, records_params

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

#: Quadrant names in the order of Box 2 (I, II, III, IV).
QUADRANTS: tuple[str, ...] = ("translation", "integration", "noise", "overestimation")

_EMBED_HINT = "Run `mst.tl.embed_patches` first (it writes `obsm['X_<model>']`)."


# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------
def _labels(adata: AnnData, annotation_key: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return (mask of annotated spots, integer codes of those spots, category names); needs >= 2 categories."""
    col = check_obs_column(adata, annotation_key)
    mask = ~pd.isna(col).to_numpy()
    cat = pd.Categorical(col[mask].astype(str))
    cats = list(cat.categories)
    if len(cats) < 2:
        msg = (
            f"`adata.obs[{annotation_key!r}]` has {len(cats)} distinct non-missing value(s) ({cats}); "
            "relevance (mutual information) needs an annotation with at least 2 categories."
        )
        raise ValueError(msg)
    return mask, np.asarray(cat.codes, dtype=np.int64), cats


def _resolve_genes(adata: AnnData, genes: str | Sequence[str]) -> list[str]:
    """Return the list of gene names to use, or raise an actionable error."""
    if isinstance(genes, str):
        if genes != "highly_variable":
            msg = f"`genes` must be 'highly_variable' or a list of gene names, got the string {genes!r}."
            raise ValueError(msg)
        if "highly_variable" not in adata.var.columns:
            msg = (
                "`adata.var['highly_variable']` not found. Run `sc.pp.highly_variable_genes(adata, ...)` on "
                "log-normalised data first, or pass an explicit list of genes (`genes=[...]`)."
            )
            raise KeyError(msg)
        names = adata.var_names[adata.var["highly_variable"].to_numpy(dtype=bool)].tolist()
        if not names:
            msg = "`adata.var['highly_variable']` selects no gene; rerun `sc.pp.highly_variable_genes`."
            raise ValueError(msg)
        return names
    names = [str(g) for g in genes]
    if not names:
        msg = "`genes` is empty: pass at least one gene name."
        raise ValueError(msg)
    missing = [g for g in names if g not in adata.var_names]
    if missing:
        msg = f"{len(missing)} gene(s) not in `adata.var_names`: {missing[:10]}{' ...' if len(missing) > 10 else ''}."
        raise KeyError(msg)
    if len(set(names)) != len(names):
        msg = "`genes` contains duplicated names."
        raise ValueError(msg)
    return names


def _expression(adata: AnnData, genes: list[str], layer: str | None) -> np.ndarray:
    """Dense float64 matrix (n_obs × n_genes) of ``layer`` (or X) for ``genes``."""
    if layer is not None and layer not in adata.layers:
        msg = f"Layer {layer!r} not found in `adata.layers`. Available: {list_keys(adata.layers.keys())}."
        raise KeyError(msg)
    idx = adata.var_names.get_indexer(genes)
    x = adata.X if layer is None else adata.layers[layer]
    x = x[:, idx]
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        msg = f"Expression ({'X' if layer is None else f'layer {layer!r}'}) contains NaN or infinite values."
        raise ValueError(msg)
    return x


def _warn_if_counts(x: np.ndarray, layer: str | None) -> None:
    if x.size and x.max() > 50 and np.all(x == np.round(x)):
        logg.warning(
            f"{'X' if layer is None else f'layer {layer!r}'} looks like raw counts; correlations are meant for "
            "log-normalised expression (e.g. `sc.pp.normalize_total` then `sc.pp.log1p`, or pass `layer=`)."
        )


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise z-scores (population std) and a mask of non-constant columns (constant columns become 0)."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    ok = sd > 1e-12 * np.maximum(1.0, np.abs(mu))
    z = np.zeros_like(x)
    z[:, ok] = (x[:, ok] - mu[ok]) / sd[ok]
    return z, ok


def abs_pearson(expr: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """|Pearson r| of every gene (columns of ``expr``) with every feature (columns of ``feats``).

    Vectorised: both are standardised and multiplied, ``|Z_g^T Z_f| / n``. A constant column gives 0.

    Returns
    -------
    ndarray, shape ``(n_genes, n_features)``, float64.
    """
    zg, _ = _standardise(expr)
    zf, _ = _standardise(feats)
    r = zg.T @ zf / zg.shape[0]
    return np.clip(np.abs(r), 0.0, 1.0)


def _mutual_info(x: np.ndarray, y: np.ndarray, *, n_neighbors: int, random_state: int, n_jobs: int | None):
    from sklearn.feature_selection import mutual_info_classif

    return mutual_info_classif(
        x, y, discrete_features=False, n_neighbors=n_neighbors, random_state=random_state, n_jobs=n_jobs
    )


def _thresholds_arg(thresholds) -> tuple[str, tuple[float, float] | None]:
    if isinstance(thresholds, str):
        if thresholds not in ("permutation", "median"):
            msg = f"`thresholds` must be 'permutation', 'median' or a pair (x, y) of numbers, got {thresholds!r}."
            raise ValueError(msg)
        return thresholds, None
    try:
        x, y = (float(v) for v in thresholds)
    except (TypeError, ValueError):
        msg = f"`thresholds` must be 'permutation', 'median' or a pair (x, y) of numbers, got {thresholds!r}."
        raise ValueError(msg) from None
    if not (np.isfinite(x) and np.isfinite(y)):
        msg = f"`thresholds` must be finite numbers, got {thresholds!r}."
        raise ValueError(msg)
    return "fixed", (x, y)


def _check_fixed(fixed: tuple[float, float] | None, n_categories: int, *, x_name: str, x_min: float) -> None:
    """Fixed thresholds must lie where the axes have values, else a quadrant is empty by construction.

    x: ``[x_min, 1)`` (|r| has ``x_min = 0``, Pearson r ``-1``; a value must be *strictly above* it, and none is
    above 1). y: mutual information in nats, ``[0, ln(n_categories))`` (its largest possible value).
    """
    if fixed is None:
        return
    x, y = fixed
    if not x_min <= x < 1:
        msg = (
            f"`thresholds[0]` (the {x_name} threshold) must lie in [{x_min:g}, 1): a feature counts when its value is "
            f"strictly above it, and {x_name} never exceeds 1; got {x!r}."
        )
        raise ValueError(msg)
    y_max = float(np.log(n_categories))
    if not 0 <= y < y_max:
        msg = (
            f"`thresholds[1]` (the relevance threshold, mutual information in nats) must lie in [0, {y_max:.3g}) for "
            f"an annotation of {n_categories} categories (ln {n_categories} is the largest possible value); got {y!r}."
        )
        raise ValueError(msg)


def _check_n_neighbors(n_neighbors) -> None:
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer) or n_neighbors < 1:
        msg = f"`n_neighbors` must be a positive integer (neighbours of the MI estimator), got {n_neighbors!r}."
        raise ValueError(msg)


def _assign(relevant: np.ndarray, shared: np.ndarray) -> pd.Categorical:
    out = np.where(
        relevant & shared,
        QUADRANTS[0],
        np.where(relevant, QUADRANTS[1], np.where(shared, QUADRANTS[3], QUADRANTS[2])),
    )
    return pd.Categorical(out, categories=list(QUADRANTS), ordered=True)


def _shares(quadrant: pd.Categorical) -> dict[str, float]:
    n = len(quadrant)
    return {q: float((np.asarray(quadrant) == q).sum() / n) if n else 0.0 for q in QUADRANTS}


# --------------------------------------------------------------------------------------------------------------------
# tl.quadrants
# --------------------------------------------------------------------------------------------------------------------
def quadrants(
    data: SpatialData | AnnData,
    use_rep: str,
    annotation_key: str = "cluster",
    *,
    genes: Literal["highly_variable"] | Sequence[str] = "highly_variable",
    layer: str | None = None,
    relevance: Literal["mutual_info"] = "mutual_info",
    shared: Literal["max_abs_pearson"] = "max_abs_pearson",
    thresholds: Literal["permutation", "median"] | tuple[float, float] = "permutation",
    n_perms: int = 100,
    quantile: float = 0.95,
    n_null_features: int | None = 32,
    n_neighbors: int = 3,
    table_key: str = "table",
    random_state: int = 0,
    n_jobs: int | None = None,
    key_added: str = "quadrants",
    copy: bool = False,
) -> AnnData | None:
    """Place every morphological feature in the translation–integration quadrants.

    Implements Box 2 of Chelebian, Avenel & Wählby, *Nat. Commun.* 2025: per feature (column of
    ``obsm[use_rep]``), *relevance* is the mutual information with the annotation (scikit-learn
    :func:`~sklearn.feature_selection.mutual_info_classif`, the kNN estimator of Ross 2014, seeded) and *shared
    information* is the largest |Pearson r| with any of ``genes`` (and which gene). With thresholds on both axes each
    feature falls in one quadrant: I ``"translation"`` (relevant, shared), II ``"integration"`` (relevant, not
    shared), III ``"noise"`` (neither), IV ``"overestimation"`` (shared, not relevant).

    Spots with a missing annotation are left out of both axes (their number is in ``params``).

    Parameters
    ----------
    data
        AnnData, or SpatialData whose table ``table_key`` is used.
    use_rep
        ``obsm`` key of the morphological features, e.g. ``"X_densenet121"`` (from :func:`morphst.tl.embed_patches`).
    annotation_key
        ``obs`` column with the task's labels (categorical; at least 2 categories), e.g. clusters or pathology.
    genes
        ``"highly_variable"`` (``var['highly_variable']``, from :func:`scanpy.pp.highly_variable_genes`) or a list
        of gene names: the genes the shared axis is measured against.
    layer
        Layer with the expression used for correlations (default: ``X``). It should be log-normalised
        (e.g. log1p of counts per 10,000); a warning is logged when it looks like raw counts.
    relevance
        Relevance measure; only ``"mutual_info"``.
    shared
        Shared-information measure; only ``"max_abs_pearson"``.
    thresholds
        ``"permutation"`` (default): the ``quantile`` of a pooled permutation null, so that *relevant* and *shared*
        mean "above chance". Relevance null: the mutual information of features with shuffled labels, pooled over
        ``n_perms`` permutations × ``n_null_features`` features drawn at random (seeded) once. Shared null: the max
        |r| over ``genes`` after shuffling the spots (rows) of all features relative to expression, pooled over
        ``n_perms`` permutations × all features. ``"median"``: the median of each axis over features. A pair
        ``(x, y)``: fixed thresholds for shared information (x, |r|, in ``[0, 1)``) and relevance (y, nats, in
        ``[0, ln(n_categories))``). A feature is relevant (shared) when its value is strictly above the threshold.
    n_perms
        Permutations for ``thresholds="permutation"``.
    quantile
        Quantile of the pooled null used as threshold (0.95: the 95th percentile).
    n_null_features
        Features used for the relevance null (the kNN mutual-information estimate costs ~5 ms per feature and
        permutation; the null distribution hardly depends on the feature). ``None``: all features.
    n_neighbors
        Neighbours of the mutual-information estimator.
    table_key
        Table of a SpatialData.
    random_state
        Seed of the mutual-information estimator (its jitter) and of the permutations.
    n_jobs
        Workers of :func:`~sklearn.feature_selection.mutual_info_classif`.
    key_added
        Key in ``uns`` and ``varm``.
    copy
        Return a modified copy instead of writing to ``data``.

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
    ``.uns[key_added]['params']`` : dict
        The parameters, the genes used and the number of spots used / left out.
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
    adata = get_adata(data, table_key)
    # ---- validate everything before writing anything
    if relevance != "mutual_info":
        msg = f"`relevance` must be 'mutual_info', got {relevance!r}."
        raise ValueError(msg)
    if shared != "max_abs_pearson":
        msg = f"`shared` must be 'max_abs_pearson', got {shared!r}."
        raise ValueError(msg)
    mode, fixed = _thresholds_arg(thresholds)
    if mode == "permutation" and (int(n_perms) != n_perms or n_perms < 1):
        msg = f"`n_perms` must be a positive integer, got {n_perms!r}."
        raise ValueError(msg)
    if not 0 < quantile < 1:
        msg = f"`quantile` must be in (0, 1), got {quantile!r}."
        raise ValueError(msg)
    if n_null_features is not None and n_null_features < 1:
        msg = f"`n_null_features` must be a positive integer or None, got {n_null_features!r}."
        raise ValueError(msg)
    _check_n_neighbors(n_neighbors)
    check_unique_var_names(adata, "mst.tl.quadrants")
    feats = check_obsm(adata, use_rep, hint=_EMBED_HINT).astype(np.float64)
    mask, y, cats = _labels(adata, annotation_key)
    _check_fixed(fixed, len(cats), x_name="|Pearson r|", x_min=0.0)
    gene_names = _resolve_genes(adata, genes)
    expr = _expression(adata, gene_names, layer)
    _warn_if_counts(expr, layer)
    feats, expr = feats[mask], expr[mask]
    n_obs, n_feat = feats.shape
    if n_obs <= n_neighbors:
        msg = f"Only {n_obs} annotated spots; need more than `n_neighbors`={n_neighbors}."
        raise ValueError(msg)

    # ---- relevance: mutual information with the annotation
    mi = _mutual_info(feats, y, n_neighbors=n_neighbors, random_state=random_state, n_jobs=n_jobs)
    # ---- shared information: max |r| over genes
    r = abs_pearson(expr, feats)  # genes × features
    shared_v = r.max(axis=0)
    best = np.asarray(gene_names, dtype=object)[r.argmax(axis=0)]

    # ---- thresholds
    null_info: dict[str, object] = {}
    if mode == "fixed":
        thr_shared, thr_rel = fixed
    elif mode == "median":
        thr_shared, thr_rel = float(np.median(shared_v)), float(np.median(mi))
    else:
        rng = np.random.default_rng(random_state)
        n_null = n_feat if n_null_features is None else min(int(n_null_features), n_feat)
        null_cols = np.sort(rng.choice(n_feat, size=n_null, replace=False))
        zg, _ = _standardise(expr)
        zf, _ = _standardise(feats)
        null_mi, null_r = [], []
        for p in range(int(n_perms)):
            perm = rng.permutation(n_obs)
            null_mi.append(
                _mutual_info(
                    feats[:, null_cols], y[perm], n_neighbors=n_neighbors, random_state=random_state + p, n_jobs=n_jobs
                )
            )
            perm = rng.permutation(n_obs)
            null_r.append(np.abs(zg.T @ zf[perm] / n_obs).max(axis=0))
        null_mi, null_r = np.concatenate(null_mi), np.concatenate(null_r)
        thr_rel = float(np.quantile(null_mi, quantile))
        thr_shared = float(np.quantile(null_r, quantile))
        null_info = {"n_null_relevance": int(null_mi.size), "n_null_shared": int(null_r.size)}

    quad = _assign(mi > thr_rel, shared_v > thr_shared)
    df = pd.DataFrame(
        {"relevance": mi.astype(np.float64), "shared": shared_v, "best_gene": best.astype(str), "quadrant": quad},
        index=pd.Index([str(i) for i in range(n_feat)], name="feature"),
    )
    varm = np.full((adata.n_vars, n_feat), np.nan, dtype=np.float32)
    varm[adata.var_names.get_indexer(gene_names)] = r.astype(np.float32)
    shares = _shares(quad)

    # ---- write
    if copy:
        adata = adata.copy()
    adata.varm[key_added] = varm
    adata.uns[key_added] = {
        "features": df,
        "thresholds": {"relevance": float(thr_rel), "shared": float(thr_shared)},
        "shares": shares,
        "params": records_params(
            use_rep=use_rep,
            annotation_key=annotation_key,
            categories=cats,
            genes=gene_names,
            layer=layer,
            relevance=relevance,
            shared=shared,
            thresholds=mode if mode != "fixed" else list(fixed),
            n_perms=int(n_perms) if mode == "permutation" else 0,
            quantile=quantile if mode == "permutation" else None,
            n_null_features=n_null_features,
            null="relevance: MI with shuffled labels, pooled over permutations x a seeded subset of features; "
            "shared: max |r| over genes after shuffling the spots of all features, pooled over permutations x "
            "features"
            if mode == "permutation"
            else None,
            n_neighbors=n_neighbors,
            random_state=random_state,
            n_obs_used=int(n_obs),
            n_obs_excluded_missing_annotation=int((~mask).sum()),
            **null_info,
        ),
    }
    logg.info(
        "    finished: added\n"
        f"    .uns[{key_added!r}] (features, thresholds, shares, params)\n"
        f"    .varm[{key_added!r}] (|r| genes x features); shares: "
        + ", ".join(f"{q} {v:.0%}" for q, v in shares.items()),
        time=start,
    )
    return adata if copy else None


# --------------------------------------------------------------------------------------------------------------------
# tl.gene_quadrants
# --------------------------------------------------------------------------------------------------------------------
def _pcc_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise Pearson r of ``a`` and ``b`` (same shape); NaN where a column is constant."""
    za, oka = _standardise(a)
    zb, okb = _standardise(b)
    r = (za * zb).mean(axis=0)
    r[~(oka & okb)] = np.nan
    return r


def gene_quadrants(
    data: SpatialData | AnnData,
    *,
    predicted: str = "predicted",
    annotation_key: str = "cluster",
    layer: str | None = None,
    thresholds: Literal["permutation", "median"] | tuple[float, float] = "permutation",
    groupby: str | None = None,
    n_perms: int = 100,
    quantile: float = 0.95,
    n_neighbors: int = 3,
    table_key: str = "table",
    random_state: int = 0,
    key_added: str = "gene_quadrants",
    copy: bool = False,
) -> AnnData | None:
    """The gene-level reading of the quadrant framework: predictability from morphology against relevance.

    After Box 1/2 of Chelebian, Avenel & Wählby, *Nat. Commun.* 2025. For every gene predicted by
    :func:`morphst.tl.predict_expression` (``var[f'{predicted}_pcc']`` not NaN): the x axis is how well it is
    predicted from morphology (mean per-section Pearson r), the y axis how relevant the gene is to the annotation
    (mutual information of its expression with the labels, scikit-learn ``mutual_info_classif``, seeded). Genes that
    are well predicted but not relevant fall in ``"overestimation"`` (e.g. housekeeping genes whose high score says
    nothing about the task). Spots with a missing annotation are left out of the relevance axis.

    Parameters
    ----------
    data
        AnnData, or SpatialData whose table ``table_key`` is used.
    predicted
        Key of :func:`morphst.tl.predict_expression`: reads ``var[f'{predicted}_pcc']`` and, for the permutation
        null, ``layers[predicted]``.
    annotation_key
        ``obs`` column with the labels (at least 2 categories).
    layer
        Observed expression, log-normalised like the prediction target: used for the relevance axis and for the
        permutation null of the PCC. ``None``: the layer named by ``uns[predicted]['params']['target']`` when it
        exists (e.g. ``'log1p_cp10k'``), else ``X``.
    thresholds
        ``"permutation"``: relevance threshold = ``quantile`` of the MI of the genes with shuffled labels (pooled
        over genes × ``n_perms``); predictability threshold = ``quantile`` of the PCC between
        ``layers[predicted]`` and the observed values with spots shuffled within each ``groupby`` group, averaged
        over groups as the per-gene PCC is (pooled over genes × ``n_perms``). ``"median"``: medians over genes.
        ``(x, y)``: fixed PCC (x, in ``[-1, 1)``) and MI (y, nats, in ``[0, ln(n_categories))``) thresholds.
    groupby
        ``obs`` column of the cross-validation folds for the PCC null (within each fold, only the genes predicted in
        it). ``None``: ``obs[f'{predicted}_fold']`` if present, else ``uns[predicted]['params']['groupby']``, else
        one group.
    n_perms
        Permutations for ``thresholds="permutation"``.
    quantile
        Quantile of the pooled null used as threshold.
    n_neighbors
        Neighbours of the mutual-information estimator.
    table_key
        Table of a SpatialData.
    random_state
        Seed of the estimator's jitter and of the permutations.
    key_added
        Prefix of the ``var`` columns and key in ``uns``.
    copy
        Return a modified copy instead of writing to ``data``.

    Returns
    -------
    ``None``, or a copy of the AnnData when ``copy=True``. Sets:

    ``.var[f'{key_added}_relevance']`` : float, shape ``(n_vars,)``
        Mutual information (nats) with the annotation; NaN for genes not predicted.
    ``.var[f'{key_added}']`` : ordered categorical, shape ``(n_vars,)``
        Quadrant of each predicted gene (translation, integration, noise, overestimation); NaN otherwise.
    ``.var[f'{key_added}_overestimation']`` : bool, shape ``(n_vars,)``
        Genes in the overestimation quadrant.
    ``.uns[key_added]`` : dict
        ``genes`` (DataFrame: pcc, relevance, quadrant), ``thresholds`` ``{'relevance', 'pcc'}``, ``shares``,
        ``params``.

    Raises
    ------
    KeyError
        If ``var[f'{predicted}_pcc']`` (run :func:`morphst.tl.predict_expression` first), the annotation, the layer,
        or ``layers[predicted]`` (for the permutation null) is missing.
    ValueError
        If no gene was predicted, the annotation has fewer than 2 categories, ``var_names`` has duplicates, fixed
        thresholds lie outside the range of their axis, or an option is invalid. Nothing is written then.
    """
    start = logg.info(f"computing gene quadrants of {predicted!r} against {annotation_key!r}")
    adata = get_adata(data, table_key)
    col = f"{predicted}_pcc"
    if col not in adata.var.columns:
        msg = (
            f"`adata.var[{col!r}]` not found: run `mst.tl.predict_expression(adata, ..., key_added={predicted!r})` "
            f"first. Available var columns: {list_keys(adata.var.columns)}."
        )
        raise KeyError(msg)
    mode, fixed = _thresholds_arg(thresholds)
    if mode == "permutation" and (int(n_perms) != n_perms or n_perms < 1):
        msg = f"`n_perms` must be a positive integer, got {n_perms!r}."
        raise ValueError(msg)
    if not 0 < quantile < 1:
        msg = f"`quantile` must be in (0, 1), got {quantile!r}."
        raise ValueError(msg)
    _check_n_neighbors(n_neighbors)
    check_unique_var_names(adata, "mst.tl.gene_quadrants")
    pcc_all = adata.var[col].to_numpy(dtype=np.float64)
    used = np.isfinite(pcc_all)
    if not used.any():
        msg = f"`adata.var[{col!r}]` is NaN for every gene: no gene was predicted."
        raise ValueError(msg)
    gene_names = adata.var_names[used].tolist()
    pcc = pcc_all[used]
    mask, y, cats = _labels(adata, annotation_key)
    _check_fixed(fixed, len(cats), x_name="Pearson r", x_min=-1.0)
    pparams = adata.uns[predicted].get("params", {}) if isinstance(adata.uns.get(predicted), dict) else {}
    pparams = pparams if isinstance(pparams, dict) else {}
    if layer is None and isinstance(pparams.get("target"), str) and pparams["target"] in adata.layers:
        layer = pparams["target"]  # the observed values that predict_expression was trained on
    expr_all = _expression(adata, gene_names, layer)
    expr = expr_all[mask]
    if expr.shape[0] <= n_neighbors:
        msg = f"Only {expr.shape[0]} annotated spots; need more than `n_neighbors`={n_neighbors}."
        raise ValueError(msg)
    if mode == "permutation":
        if predicted not in adata.layers:
            msg = (
                f"`adata.layers[{predicted!r}]` not found; it is needed for the permutation null of the PCC "
                "(run `mst.tl.predict_expression` first), or use `thresholds='median'` or `(x, y)`."
            )
            raise KeyError(msg)
        if groupby is None:
            for g in (f"{predicted}_fold", pparams.get("groupby")):
                if isinstance(g, str) and g in adata.obs.columns:
                    groupby = g
                    break
        if groupby is not None:
            check_obs_column(adata, groupby)
        pred = adata.layers[predicted][:, adata.var_names.get_indexer(gene_names)]
        pred = np.asarray(pred.toarray() if hasattr(pred, "toarray") else pred, dtype=np.float64)

    mi = _mutual_info(expr, y, n_neighbors=n_neighbors, random_state=random_state, n_jobs=None)

    if mode == "fixed":
        thr_pcc, thr_rel = fixed
    elif mode == "median":
        thr_pcc, thr_rel = float(np.median(pcc)), float(np.median(mi))
    else:
        rng = np.random.default_rng(random_state)
        groups = (
            [np.arange(adata.n_obs)]
            if groupby is None
            else [np.flatnonzero((adata.obs[groupby] == g).to_numpy()) for g in adata.obs[groupby].dropna().unique()]
        )
        null_mi, null_pcc = [], []
        for p in range(int(n_perms)):
            null_mi.append(
                _mutual_info(
                    expr,
                    y[rng.permutation(len(y))],
                    n_neighbors=n_neighbors,
                    random_state=random_state + p,
                    n_jobs=None,
                )
            )
            rs = []
            for idx in groups:
                if len(idx) < 3:
                    continue
                ok = np.isfinite(pred[idx]).all(axis=0)  # genes predicted for this group (fold)
                r_g = np.full(len(gene_names), np.nan)
                r_g[ok] = _pcc_columns(pred[idx][:, ok], expr_all[rng.permutation(idx)][:, ok])
                rs.append(r_g)
            if rs:
                null_pcc.append(np.nanmean(np.vstack(rs), axis=0))
        null_mi = np.concatenate(null_mi)
        null_pcc = np.concatenate(null_pcc) if null_pcc else np.array([np.nan])
        thr_rel = float(np.quantile(null_mi, quantile))
        thr_pcc = float(np.nanquantile(null_pcc, quantile))

    quad = _assign(mi > thr_rel, pcc > thr_pcc)
    df = pd.DataFrame({"pcc": pcc, "relevance": mi, "quadrant": quad}, index=pd.Index(gene_names, name="gene"))
    rel_col = np.full(adata.n_vars, np.nan)
    rel_col[used] = mi
    q_obj = np.full(adata.n_vars, None, dtype=object)
    q_obj[used] = np.asarray(quad, dtype=object)
    q_col = pd.Categorical(q_obj, categories=list(QUADRANTS), ordered=True)
    shares = _shares(quad)

    if copy:
        adata = adata.copy()
    adata.var[f"{key_added}_relevance"] = rel_col
    adata.var[key_added] = q_col
    adata.var[f"{key_added}_overestimation"] = np.asarray(q_col == "overestimation", dtype=bool)
    adata.uns[key_added] = {
        "genes": df,
        "thresholds": {"relevance": float(thr_rel), "pcc": float(thr_pcc)},
        "shares": shares,
        "params": records_params(
            predicted=predicted,
            annotation_key=annotation_key,
            categories=cats,
            layer=layer,
            thresholds=mode if mode != "fixed" else list(fixed),
            groupby=groupby,
            n_perms=int(n_perms) if mode == "permutation" else 0,
            quantile=quantile if mode == "permutation" else None,
            n_neighbors=n_neighbors,
            random_state=random_state,
            n_genes=len(gene_names),
            n_obs_used=int(mask.sum()),
            n_obs_excluded_missing_annotation=int((~mask).sum()),
        ),
    }
    n_over = int((df["quadrant"] == "overestimation").sum())
    logg.info(
        f"    finished: added\n    .var[{key_added!r}], .var['{key_added}_relevance'], "
        f".var['{key_added}_overestimation'] ({n_over} gene(s)), .uns[{key_added!r}]",
        time=start,
    )
    return adata if copy else None


# --------------------------------------------------------------------------------------------------------------------
# tl.select_features
# --------------------------------------------------------------------------------------------------------------------
def select_features(
    data: SpatialData | AnnData,
    use_rep: str,
    quadrant: Literal["translation", "integration", "noise", "overestimation"] | Sequence[str] = "translation",
    *,
    key: str = "quadrants",
    table_key: str = "table",
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Keep only the features of ``use_rep`` that fall in the given quadrant(s).

    Reads :func:`morphst.tl.quadrants`'s ``uns[key]`` (Chelebian et al. 2025, Box 2) and writes the chosen columns
    to a new ``obsm`` entry, e.g. quadrant-I features for :func:`morphst.tl.predict_expression` and quadrant-II
    features for :func:`morphst.tl.fuse`.

    Parameters
    ----------
    data
        AnnData, or SpatialData whose table ``table_key`` is used.
    use_rep
        ``obsm`` key of the features; must be the one ``uns[key]`` was computed on.
    quadrant
        One quadrant name or a list of them.
    key
        ``uns`` key written by :func:`morphst.tl.quadrants`.
    table_key
        Table of a SpatialData.
    key_added
        ``obsm`` key to write; default ``f'{use_rep}_{quadrant}'`` (names joined by ``'_'`` for a list).
    copy
        Return a modified copy instead of writing to ``data``.

    Returns
    -------
    ``None``, or a copy of the AnnData when ``copy=True``. Sets:

    ``.obsm[key_added]`` : ndarray, shape ``(n_obs, n_selected)``
        The selected columns of ``obsm[use_rep]``, in their original order.
    ``.uns[key_added]['params']`` : dict
        Source, quadrants and the selected column numbers (``features``).

    Raises
    ------
    KeyError
        If ``uns[key]`` (run :func:`morphst.tl.quadrants` first) or ``obsm[use_rep]`` is missing.
    ValueError
        If ``uns[key]`` was computed on another representation, a quadrant name is unknown, or no feature is in
        the chosen quadrant(s).
    """
    adata = get_adata(data, table_key)
    res = adata.uns.get(key)
    if not isinstance(res, dict) or "features" not in res:
        msg = (
            f"`adata.uns[{key!r}]` with quadrant results not found: run "
            f"`mst.tl.quadrants(adata, {use_rep!r}, ..., key_added={key!r})` first."
        )
        raise KeyError(msg)
    x = check_obsm(adata, use_rep, hint=_EMBED_HINT)
    src = res.get("params", {}).get("use_rep")
    if src is not None and src != use_rep:
        msg = f"`adata.uns[{key!r}]` was computed on {src!r}, not {use_rep!r}; pass use_rep={src!r} or another key."
        raise ValueError(msg)
    qs = [quadrant] if isinstance(quadrant, str) else [str(q) for q in quadrant]
    bad = [q for q in qs if q not in QUADRANTS]
    if bad or not qs:
        msg = f"Unknown quadrant(s) {bad}; choose from {list(QUADRANTS)}."
        raise ValueError(msg)
    df = res["features"]
    if len(df) != x.shape[1]:
        msg = f"`adata.uns[{key!r}]` has {len(df)} features but `obsm[{use_rep!r}]` has {x.shape[1]}; rerun quadrants."
        raise ValueError(msg)
    cols = np.flatnonzero(np.isin(np.asarray(df["quadrant"], dtype=object), qs))
    if cols.size == 0:
        shares = res.get("shares", {})
        msg = f"No feature of {use_rep!r} is in quadrant(s) {qs} (shares: {shares}); choose another quadrant."
        raise ValueError(msg)
    key_added = key_added if key_added is not None else f"{use_rep}_{'_'.join(qs)}"
    src_x = adata.obsm[use_rep]
    out = np.asarray(src_x)[:, cols] if not hasattr(src_x, "toarray") else x[:, cols]
    if copy:
        adata = adata.copy()
    adata.obsm[key_added] = np.ascontiguousarray(out)
    adata.uns[key_added] = {
        "params": records_params(use_rep=use_rep, quadrant=qs, key=key, features=cols.astype(np.int64))
    }
    logg.info(f"selected {cols.size} of {x.shape[1]} features of {use_rep!r} in {qs}: added .obsm[{key_added!r}]")
    return adata if copy else None


__all__ = ["QUADRANTS", "abs_pearson", "gene_quadrants", "quadrants", "select_features"]
