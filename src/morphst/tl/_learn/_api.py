""":func:`learn_features`: the former entry of both objectives, a thin dispatcher to one function per objective."""

from __future__ import annotations

import inspect
import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._utils import check_obsm, get_adata, list_keys, records_params
from .._nn import TrainOptions, resolve_train_device
from .._translation import section_groups
from ._common import check_width, training_spots, write_learned
from ._translation import learn_translation_features

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

OBJECTIVES = ("translation", "integration")
#: The parameters of the integration objective and their defaults (``n_components=None``: 8).
INTEGRATION_DEFAULTS = {
    "annotation_key": None, "expression_rep": "X_pca", "method": "auto", "penalty_weight": 5.0, "n_components": None,
    "train": None, "library_key": Key.LIBRARY, "options": None, "device": None, "table_key": Key.TABLE,
    "random_state": 0, "key_added": "X_learned_integration", "copy": False,
}  # fmt: skip


def learn_features(
    data: AnnData | SpatialData,
    use_rep: str = Key.DEFAULT_REP,
    *,
    objective: Literal["translation", "integration"],
    **kwargs: Any,
) -> AnnData | None:
    """Learn morphology features for one objective (deprecated: call the function of the objective).

    ``objective="translation"`` calls :func:`~morphst.tl.learn_translation_features` with ``kwargs``;
    ``objective="integration"`` learns integration features (``learn_integration_features``). Parameters of the
    other objective are ignored, as they were. A ``FutureWarning`` names the function to call instead;
    ``learn_features`` is removed in the next release.

    Parameters
    ----------
    data, use_rep
        See the function of the objective.
    objective
        ``"translation"`` or ``"integration"``.
    **kwargs
        Translation: the parameters of :func:`~morphst.tl.learn_translation_features` (``n_components=None``:
        its default). Integration: ``annotation_key`` (``obs`` labels the features stay relevant to; ``None``:
        the self-supervised spatial objective), ``expression_rep`` (``obsm`` key whose information is penalised),
        ``method`` (``"auto"``, ``"hsic"``, ``"moran"``, ``"residual"``), ``penalty_weight``, ``n_components``
        (``None``: 8), ``train``, ``library_key``, ``options``, ``device``, ``table_key``, ``random_state``,
        ``key_added``, ``copy``.

    Returns
    -------
    What the function of the objective returns; ``obsm[key_added]`` and ``uns[key_added]`` (``curve``,
    ``chosen_epoch``, ``params``) are written.

    Raises
    ------
    ValueError
        An unknown ``objective``; the errors of the function of the objective.
    TypeError
        A keyword argument of neither objective.
    """
    if objective not in OBJECTIVES:
        msg = f"`objective` must be one of {list(OBJECTIVES)}, got {objective!r}."
        raise ValueError(msg)
    translation = set(inspect.signature(learn_translation_features).parameters) - {"data", "use_rep"}
    unknown = sorted(set(kwargs) - translation - set(INTEGRATION_DEFAULTS))
    if unknown:
        msg = f"`learn_features` got unknown keyword argument(s) {unknown}."
        raise TypeError(msg)
    warnings.warn(
        f"`learn_features(objective={objective!r})` is now `learn_{objective}_features(...)`, whose parameters all "
        "apply to the objective; `learn_features` will be removed in the next release.",
        FutureWarning,
        stacklevel=2,
    )
    if objective == "translation":
        dropped = ("n_components", "key_added")  # None there: the function's default
        kw = {k: v for k, v in kwargs.items() if k in translation and not (v is None and k in dropped)}
        return learn_translation_features(data, use_rep, **kw)
    kw = {k: v for k, v in kwargs.items() if k in INTEGRATION_DEFAULTS}
    return _learn_integration(data, use_rep, {**INTEGRATION_DEFAULTS, **kw})


def _learn_integration(data, use_rep: str, p: dict) -> AnnData | None:
    """The integration objective of :func:`learn_features` (``p``: :data:`INTEGRATION_DEFAULTS` updated)."""
    adata = get_adata(data, p["table_key"])
    opts = (p["options"] or TrainOptions()).check()
    n_components = check_width(p["n_components"] if p["n_components"] is not None else 8)
    groups = section_groups(adata, p["library_key"])
    train_mask = training_spots(adata, p["train"], groups, p["library_key"])
    key_added = p["key_added"] or "X_learned_integration"
    dev = resolve_train_device(p["device"])
    start = logg.info(f"learning integration features from `obsm[{use_rep!r}]` on {int(train_mask.sum())} spots")
    z, record, params = _integration(
        adata, use_rep, annotation_key=p["annotation_key"], expression_rep=p["expression_rep"], method=p["method"],
        penalty_weight=p["penalty_weight"], groups=groups, train_mask=train_mask, n_components=n_components,
        opts=opts, device=dev, random_state=p["random_state"],
    )  # fmt: skip
    train = p["train"]
    params = records_params(
        use_rep=use_rep, objective="integration", n_components=n_components, library_key=p["library_key"],
        n_train=int(train_mask.sum()), train=None if train is None else (train if isinstance(train, str) else "array"),
        options=opts.record(), device=str(dev), random_state=p["random_state"], **params,
    )  # fmt: skip
    if p["copy"]:
        adata = adata.copy()
    write_learned(adata, key_added, z, record, params, start)
    return adata if p["copy"] else None


def _integration(
    adata, use_rep, *, annotation_key, expression_rep, method, penalty_weight, groups, train_mask, n_components,
    opts, device, random_state,
):  # fmt: skip
    """Fit the integration objective (:func:`morphst.tl._learn._integration.fit_integration`)."""
    from ..._utils._graph import knn_edges, symmetrise
    from ._integration import METHODS, fit_integration

    if method not in ("auto", *METHODS):
        msg = f"`method` must be one of {['auto', *METHODS]}, got {method!r}."
        raise ValueError(msg)
    requested = method
    if method == "auto":
        method = "moran" if annotation_key is None else "hsic"
    if not (np.isfinite(penalty_weight) and penalty_weight >= 0):
        msg = f"`penalty_weight` must be a finite number >= 0, got {penalty_weight!r}."
        raise ValueError(msg)
    x = check_obsm(adata, use_rep, hint="Run `mst.tl.embed_patches` first.")
    expr = check_obsm(adata, expression_rep, hint="Run `sc.pp.pca` (on log-normalised expression) first.")
    labels, edges = None, None
    if annotation_key is not None:
        if annotation_key not in adata.obs.columns:
            msg = (
                f"`annotation_key`={annotation_key!r} is not an obs column. Available: {list_keys(adata.obs.columns)}."
            )
            raise KeyError(msg)
        codes = pd.Categorical(adata.obs[annotation_key]).codes.astype(np.int64)
        if len(np.unique(codes[train_mask & (codes >= 0)])) < 2:
            msg = f"`adata.obs[{annotation_key!r}]` has fewer than 2 categories among the training spots."
            raise ValueError(msg)
        labels = codes
    elif method in ("hsic", "moran"):
        if Key.SPATIAL not in adata.obsm:
            msg = "The self-supervised objective (no `annotation_key`) needs spot coordinates in `obsm['spatial']`."
            raise KeyError(msg)
        coords = np.asarray(adata.obsm[Key.SPATIAL], dtype=np.float64)[:, :2]
        r, c, d, _ = knn_edges(coords, groups, n_neighs=6)
        r, c, _ = symmetrise(r, c, d, adata.n_obs)
        edges = (np.asarray(r, np.int64), np.asarray(c, np.int64))
    z, record = fit_integration(
        np.asarray(x, dtype=np.float32), np.asarray(expr, dtype=np.float32), train=train_mask, labels=labels,
        edges=edges, groups=groups, method=method, n_components=n_components, penalty_weight=float(penalty_weight),
        options=opts, random_state=random_state, device=device,
    )  # fmt: skip
    params = {
        "expression_rep": expression_rep,
        "annotation_key": annotation_key,
        "method": method,
        "method_requested": requested,
        "penalty_weight": float(penalty_weight),
        "model_description": record.get("description", ""),
    }
    return z, record, params
