""":func:`learn_integration_features`: morphology features that add to expression what it lacks (quadrant II)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_copy, doc_data, inject_docs
from ..._utils import check_obsm, get_adata, list_keys, obs_noun, records_params, save_results
from ..._utils._hints import rep_hint
from ..._utils._sections import section_groups
from .._nn import TrainOptions, resolve_train_device
from ._common import check_penalty, check_width, training_spots
from ._integration import fit_integration
from ._linear import apply_section_statistics, section_statistics
from ._spatial_components import N_PERMUTATIONS, fit_spatial_components

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

#: Methods of :func:`learn_integration_features` (``"moran"``: the former name of ``"maf"``).
INTEGRATION_METHODS = ("auto", "maf", "multispati", "hsic", "residual")
#: Width of a trained (``"hsic"``) representation when ``n_components`` is ``None``.
HSIC_WIDTH = 8
#: What to run when ``expression_rep`` is missing: it holds expression, not patch embeddings.
_EXPRESSION_HINT = (
    "`expression_rep` is a representation of the expression: run `sc.pp.pca(adata, layer='log1p_cp10k')` first "
    "(it writes `obsm['X_pca']`), or name the `obsm` key that holds one."
)


@inject_docs(data=doc_data, copy=doc_copy)
def learn_integration_features(
    data: AnnData | SpatialData,
    use_rep: str = Key.DEFAULT_REP,
    *,
    expression_rep: str = "X_pca",
    library_key: str | None = Key.LIBRARY,
    annotation_key: str | None = None,
    method: Literal["auto", "maf", "multispati", "hsic", "residual"] = "auto",
    n_components: int | None = None,
    scale: bool = False,
    alpha: float = 0.05,
    n_permutations: int = N_PERMUTATIONS,
    penalty_weight: float = 5.0,
    train: str | np.ndarray | Sequence[str] | None = None,
    options: TrainOptions | None = None,
    device: str | None = None,
    table_key: str = Key.TABLE,
    key_added: str = "X_learned_integration",
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Learn morphology features for integration: what the image shows that expression does not predict.

    Box 1 of Chelebian, Avenel & Wählby (*Nat. Commun.* 2025), eq. 13–14 (quadrant II). Steps, every one fit on the
    ``train`` spots only and applied to every spot:

    1. Morphology and expression are centred per section (``library_key``; with ``scale`` the morphology is also
       scaled per section), so a section offset cannot become a feature; the statistics are stored and a section
       without training spots is centred on its own mean. The morphology is then standardised.
    2. ``"maf"`` (default without ``annotation_key``): the cross-fitted ridge residual of the morphology on the
       expression (no linear correlation with it), reduced to its leading principal directions (a tenth of the
       smallest section's spots at most), whitened and projected on the directions of largest Moran's I
       (maximum-autocorrelation factors, Switzer & Green 1984). ``"multispati"``: no whitening, the directions
       of largest variance × Moran's I (MULTISPATI, Dray, Saïd & Débias 2008). Each component is tested against
       spot positions permuted within sections (the null of the largest eigenvalue, so the selection is
       accounted for) and, with held-out sections, by its Moran's I there; ``n_components=None`` keeps the
       significant ones (possibly none). ``"hsic"`` (default with ``annotation_key``): a projection
       trained with torch to stay relevant (labels, or a spatial InfoNCE) while penalising its RBF-kernel HSIC with
       the expression (Gretton et al. 2005; random Fourier features, median-heuristic bandwidths). ``"residual"``:
       the cross-fitted residual itself (baseline).

    Parameters
    ----------
    {data}
    use_rep
        ``obsm`` key of the morphology features ``(n_obs, n_features)``.
    expression_rep
        ``obsm`` key of the expression representation (e.g. ``X_pca`` of log-normalised counts).
    library_key
        ``obs`` column of sections (centring, spatial neighbours, cross-fitting, null); ``None``: one section.
    annotation_key
        ``obs`` column of labels the ``"hsic"`` features must stay relevant to; ``None``: spatial (self-supervised).
    method
        ``"auto"``, ``"maf"``, ``"multispati"``, ``"hsic"`` or ``"residual"`` (see above); ``"moran"`` is the
        former name of ``"maf"`` (FutureWarning).
    n_components
        Components kept; ``None``: the significant ones (``"maf"``/``"multispati"``), 8 (``"hsic"``); ignored by
        ``"residual"`` (one column per feature).
    scale
        Also scale the morphology to unit variance per section.
    alpha
        Significance level of the components (``"maf"``/``"multispati"``).
    n_permutations
        Permutations of the null (``"maf"``/``"multispati"``; at least 19).
    penalty_weight
        Weight of the HSIC penalty (``"hsic"``, >= 0).
    train
        Spots the features are fit on: ``None`` (all), a boolean ``obs`` column, a boolean array, positions, or
        ``library_key`` values.
    options
        ``"hsic"``: optimiser and stopping rule (:class:`~morphst.tl.TrainOptions`).
    device
        ``"hsic"``: torch device; ``None``: ``mst.settings.device``.
    table_key
        Table of a SpatialData.
    key_added
        ``obsm``/``uns`` key of the result.
    random_state
        Seed of the cross-fitting folds, the permutations and the training.
    {copy}

    Returns
    -------
    ``None``, or a copy of the AnnData when ``copy=True``. Sets:

    ``.obsm[key_added]`` : ndarray, shape ``(n_obs, n_components)``, float32
        The features (``"residual"``: ``(n_obs, n_features)``; ``"maf"``/``"multispati"`` with
        ``n_components=None``: one column per significant component, possibly none: a ``UserWarning`` then).
    ``.uns[key_added]['components']`` : DataFrame
        ``"maf"``/``"multispati"``: per component its ``criterion`` (Moran's I, or variance × Moran's I),
        ``variance``, ``moran_I`` (training spots), ``p_value``, ``moran_I_held_out`` and ``p_value_held_out``
        (on sections not used to fit; NaN with one section), ``significant`` (:func:`~morphst.tl.fuse` leaves the others out).
    ``.uns[key_added]['curve']`` : DataFrame
        ``"hsic"``: per epoch; ``"residual"``: per cross-fitting fold.
    ``.uns[key_added]['sections']`` : dict
        ``names``, per-section ``mean`` and ``scale`` ``(n_sections, n_features)``.
    ``.uns[key_added]['params']`` : dict
        The parameters, the method used and a description of the fit.

    Raises
    ------
    KeyError
        If ``use_rep``, ``expression_rep``, ``annotation_key``, the coordinates or a training section is missing.
    ValueError
        An unknown ``method``, invalid numbers, NaN features, fewer than 4 training spots, labels with
        ``"maf"``/``"multispati"``. Nothing is written then.
    """
    adata = get_adata(data, table_key)
    method, requested = _check_method(method, annotation_key)
    _check_numbers(n_components, alpha, n_permutations, penalty_weight)
    opts = (options or TrainOptions()).check()
    groups = section_groups(adata, library_key)
    train_mask = training_spots(adata, train, groups, library_key)
    x = check_obsm(adata, use_rep, hint=rep_hint(use_rep)).astype(np.float64)
    expr = check_obsm(adata, expression_rep, hint=_EXPRESSION_HINT)
    labels, edges = _labels_and_edges(adata, annotation_key, method, groups, train_mask)
    n_train = int(train_mask.sum())
    start = logg.info(
        f"learning integration features ({method}) from `obsm[{use_rep!r}]` on {n_train} {obs_noun(adata, n_train)}"
    )
    names, mean, sd = section_statistics(x, groups, train_mask, scale)
    xc = apply_section_statistics(x, groups, names, mean, sd, scale)
    expr = np.asarray(expr, dtype=np.float64)
    en, em, es = section_statistics(expr, groups, train_mask, False)
    ec = apply_section_statistics(expr, groups, en, em, es, False)
    z, uns = _fit(
        xc, ec, train_mask, labels, edges, groups, method, n_components, alpha, n_permutations, penalty_weight, opts,
        random_state, resolve_train_device(device) if method == "hsic" else "cpu",
    )  # fmt: skip
    if method in ("maf", "multispati") and z.shape[1] == 0:
        warnings.warn(
            f"No spatial component of `obsm[{use_rep!r}]` is significant at alpha {alpha:g} against "
            f"{n_permutations} permutations: `obsm[{key_added!r}]` gets 0 columns (the features carry no spatial "
            "structure beyond expression here). Pass `n_components=` to keep the leading ones, flagged not significant.",
            UserWarning,
            stacklevel=2,
        )
    uns["sections"] = {"names": [str(s) for s in names], "mean": mean, "scale": sd}
    uns["params"] = records_params(
        use_rep=use_rep, expression_rep=expression_rep, library_key=library_key, annotation_key=annotation_key,
        method=method, method_requested=requested, n_components=n_components, scale=bool(scale), alpha=float(alpha),
        n_permutations=int(n_permutations), penalty_weight=float(penalty_weight), n_train=int(train_mask.sum()),
        train=None if train is None else (train if isinstance(train, str) else "array"), options=opts.record(),
        random_state=random_state, **uns.pop("extra"),
    )  # fmt: skip
    added = [("obsm", key_added, np.asarray(z, dtype=np.float32)), ("uns", key_added, uns)]
    return save_results(adata, added, copy=copy, start=start)


def _check_method(method, annotation_key) -> tuple[str, str]:
    requested = method
    if method == "moran":
        warnings.warn(
            "`method='moran'` is now called 'maf' (maximum-autocorrelation factors after a dimension cap, "
            "per-section centring, a permutation null); use method='maf'.",
            FutureWarning,
            stacklevel=3,
        )
        method = "maf"
    if method not in INTEGRATION_METHODS:
        msg = f"`method` must be one of {list(INTEGRATION_METHODS)}, got {method!r}."
        raise ValueError(msg)
    if method == "auto":
        method = "maf" if annotation_key is None else "hsic"
    if method in ("maf", "multispati") and annotation_key is not None:
        msg = f"`method={method!r}` is self-supervised (spatial); drop `annotation_key` or use method='hsic'."
        raise ValueError(msg)
    return method, requested


def _check_numbers(n_components, alpha, n_permutations, penalty_weight) -> None:
    check_width(n_components, allow_none=True)
    if not (isinstance(alpha, float | int) and 0 < alpha < 1):
        msg = f"`alpha` must be in (0, 1), got {alpha!r}."
        raise ValueError(msg)
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int | np.integer) or n_permutations < 19:
        msg = f"`n_permutations` must be an integer >= 19, got {n_permutations!r}."
        raise ValueError(msg)
    check_penalty(penalty_weight)


def _labels_and_edges(adata, annotation_key, method, groups, train_mask):
    """Label codes (``annotation_key``) or the symmetric 6-nearest-neighbour edges within sections."""
    from ..._utils._graph import knn_edges, symmetrise

    if annotation_key is not None:
        if annotation_key not in adata.obs.columns:
            available = list_keys(adata.obs.columns)
            msg = f"`annotation_key`={annotation_key!r} is not an obs column; available: {available}."
            raise KeyError(msg)
        codes = pd.Categorical(adata.obs[annotation_key]).codes.astype(np.int64)
        if len(np.unique(codes[train_mask & (codes >= 0)])) < 2:
            msg = f"`adata.obs[{annotation_key!r}]` has fewer than 2 categories among the training spots."
            raise ValueError(msg)
        return codes, None
    if method == "residual":
        return None, None
    if Key.SPATIAL not in adata.obsm:
        msg = "The self-supervised objective (no `annotation_key`) needs spot coordinates in `obsm['spatial']`."
        raise KeyError(msg)
    coords = np.asarray(adata.obsm[Key.SPATIAL], dtype=np.float64)[:, :2]
    r, c, d, _ = knn_edges(coords, groups, n_neighs=6)
    r, c, _ = symmetrise(r, c, d, adata.n_obs)
    return None, (np.asarray(r, np.int64), np.asarray(c, np.int64))


def _fit(xc, ec, train, labels, edges, groups, method, n_components, alpha, n_perm, pw, opts, seed, device):
    """Run the method on the centred inputs; returns ``(z, uns)`` (``uns['extra']``: method-specific params)."""
    width = n_components if n_components is not None else HSIC_WIDTH
    z, record = fit_integration(
        xc, ec, train=train, labels=labels, edges=edges, groups=groups,
        method="residual" if method in ("maf", "multispati") else method, n_components=width, penalty_weight=pw,
        options=opts, random_state=seed, device=device,
    )  # fmt: skip
    if method not in ("maf", "multispati"):
        return z, {"curve": record["curve"], "extra": {"model_description": record["description"]}}
    z, rec = fit_spatial_components(
        z.astype(np.float64), train, edges, groups, n_components, alpha=alpha, n_permutations=n_perm,
        random_state=seed, whiten=method == "maf",
    )  # fmt: skip
    comp = rec["components"]
    desc = (
        f"{method}: {len(comp)} spatial components ("
        + ("Moran's I of whitened" if method == "maf" else "variance x Moran's I of")
        + f" {rec['n_dims']} leading residual "
        f"directions; {rec['n_significant']} significant at alpha {alpha:g} against {n_perm} permutations of the "
        "positions within sections) of the " + record["description"]
    )
    uns = {
        "components": comp,
        "model": {"loadings": rec["loadings"], "centre": rec["centre"], "null_maxima": rec["null"]},
        "extra": {"model_description": desc, "n_significant": rec["n_significant"]},
    }
    return z, uns
