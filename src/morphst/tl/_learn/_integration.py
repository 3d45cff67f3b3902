"""The integration objective: morphology features that stay relevant but share little with expression.

Box 1 of Chelebian, Avenel & Wählby (Nat. Commun. 2025), eq. 13–14: for integration, train the morphology encoder so
that it keeps task-relevant information while its information shared with expression is small, so that fusion adds
what expression lacks.

- ``"hsic"`` (:mod:`~morphst.tl._learn._hsic`): a projection trained with torch to minimise ``relevance +
  variance/decorrelation + penalty_weight × shared``, shared being the normalised RBF-kernel HSIC (Gretton et al.
  2005; random Fourier features) with the whitened expression; relevance to labels or, without them, a spatial
  InfoNCE.
- The spatial components of the residual (``"maf"``, ``"multispati"``) are in
  :mod:`~morphst.tl._learn._spatial_components`.
- ``"residual"``: the baseline. Features standardised on the training rows minus their ridge prediction from the
  expression representation (:class:`sklearn.linear_model.RidgeCV`, one penalty per fold chosen by leave-one-out),
  cross-fitted: each row's prediction comes from a ridge fit on the training rows of the other folds (sections when
  the training rows span two or more, else :data:`N_RESIDUAL_FOLDS` seeded random folds), so it never sees the row
  itself.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from .._nn import TrainOptions
from ._common import check_penalty, check_width
from ._hsic import fit_hsic
from ._linear import standardise_on


def fit_integration(
    x: np.ndarray,
    expr: np.ndarray,
    *,
    train: np.ndarray,
    labels: np.ndarray | None,
    edges: tuple[np.ndarray, np.ndarray] | None,
    groups: np.ndarray | None,
    method: Literal["hsic", "residual"],
    n_components: int,
    penalty_weight: float,
    options: TrainOptions,
    random_state: int,
    device,
) -> tuple[np.ndarray, dict]:
    """Learn integration features; returns ``(z, record)``.

    Parameters
    ----------
    x
        Morphology features, ``(n_obs, n_features)`` float32 (not standardised).
    expr
        Expression representation, ``(n_obs, n_expr)`` float32 (e.g. ``obsm['X_pca']``).
    train
        Boolean ``(n_obs,)``: rows the model is fit on (every row is transformed).
    labels
        Integer codes ``(n_obs,)`` of the annotation (-1: missing), or ``None`` for the self-supervised spatial
        objective.
    edges
        ``(rows, cols)`` int64 arrays of spatial k-nearest-neighbour edges within sections (both directions), for
        the self-supervised objective; ``None`` when ``labels`` is given.
    groups
        Section of each row ``(n_obs,)`` or ``None`` (early-stopping split by section).
    method
        ``"hsic"`` (penalise the HSIC between the features and ``expr``) or ``"residual"`` (cross-fitted residual of the
        features after ridge regression on ``expr``; no training).
    n_components
        Width of the learned representation.
    penalty_weight
        Weight of the shared-information penalty.
    options
        Optimiser and stopping rule.
    random_state
        Seed.
    device
        torch device.

    Returns
    -------
    ``z`` : ndarray ``(n_obs, n_components)`` float32 (``(n_obs, n_features)`` for ``"residual"``), and
    ``record``, a dict with ``curve`` (DataFrame: one row per epoch; ``"residual"``: per fold),
    ``chosen_epoch``, ``description``.
    """
    x = np.asarray(x, dtype=np.float64)
    expr = np.asarray(expr, dtype=np.float64)
    train = np.asarray(train)
    _check_inputs(x, expr, train, labels, edges, groups, method, n_components, penalty_weight)
    if method == "residual":
        return _residual(x, expr, train, groups, random_state)
    opts = options.check()
    return fit_hsic(x, expr, train, labels, edges, groups, n_components, penalty_weight, opts, random_state, device)


# ----------------------------------------------------------------------------------------------------- checks

#: The integration methods of :func:`fit_integration`.
METHODS = ("hsic", "residual")
#: Ridge penalties searched (leave-one-out, :class:`sklearn.linear_model.RidgeCV`) by the residual baseline.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))
#: Folds of the residual baseline when the rows come from one section.
N_RESIDUAL_FOLDS = 5


def _check_inputs(x, expr, train, labels, edges, groups, method, n_components, penalty_weight) -> None:
    """Raise ``ValueError`` naming the first invalid argument (before anything is trained)."""
    if method not in METHODS:
        msg = f"`method` must be one of {list(METHODS)}, got {method!r}."
        raise ValueError(msg)
    if x.ndim != 2 or x.shape[0] < 4 or x.shape[1] < 1:
        msg = f"`x` must be (n_obs >= 4, n_features >= 1) morphology features, got shape {x.shape}."
        raise ValueError(msg)
    n = x.shape[0]
    if expr.ndim != 2 or expr.shape[0] != n or expr.shape[1] < 1:
        msg = f"`expr` must be (n_obs={n}, n_expr >= 1), got shape {expr.shape}."
        raise ValueError(msg)
    for name, a in (("x", x), ("expr", expr)):
        if not np.isfinite(a).all():
            msg = f"`{name}` has {int((~np.isfinite(a)).sum())} non-finite values; impute or drop those rows first."
            raise ValueError(msg)
    if train.shape != (n,) or train.dtype != bool:
        msg = f"`train` must be a boolean mask of shape ({n},), got dtype {train.dtype} and shape {train.shape}."
        raise ValueError(msg)
    if train.sum() < 4:
        msg = f"`train` selects {int(train.sum())} rows; at least 4 are needed."
        raise ValueError(msg)
    if not (x[train].std(axis=0) > 0).any():
        msg = (
            "Every morphology feature is constant on the training rows, so there is nothing to learn: are the "
            "patches blank (a placeholder or all-black image; `embed_patches` warns about constant patches)?"
        )
        raise ValueError(msg)
    if groups is not None and np.asarray(groups).shape != (n,):
        msg = f"`groups` must have shape ({n},), got {np.asarray(groups).shape}."
        raise ValueError(msg)
    if method == "residual":
        return
    check_width(n_components)
    check_penalty(penalty_weight)
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
            msg = f"`labels` must be integer codes of shape ({n},) (-1: missing), got {lab.dtype} {lab.shape}."
            raise ValueError(msg)
        known = np.unique(lab[train & (lab >= 0)])
        if len(known) < 2:
            msg = f"`labels` has {len(known)} class(es) among the training rows; at least 2 are needed."
            raise ValueError(msg)
    else:
        if edges is None:
            msg = "Without `labels`, pass spatial `edges` (rows, cols) for the self-supervised objective."
            raise ValueError(msg)
        rows, cols = (np.asarray(e) for e in edges)
        if rows.shape != cols.shape or rows.ndim != 1 or len(rows) == 0:
            msg = f"`edges` must be two 1-D arrays of equal, positive length, got {rows.shape} and {cols.shape}."
            raise ValueError(msg)
        if rows.min() < 0 or cols.min() < 0 or rows.max() >= n or cols.max() >= n:
            msg = f"`edges` index rows outside [0, {n})."
            raise ValueError(msg)


# ----------------------------------------------------------------------------------------------------- residual


def _residual(x, expr, train, groups, random_state) -> tuple[np.ndarray, dict]:
    """Cross-fitted ridge residual of the standardised features on ``expr`` (see :func:`fit_integration`)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold

    train_rows = np.flatnonzero(train)
    xs = standardise_on(x, train_rows)
    n = len(x)
    sections = None if groups is None else np.asarray(groups).astype(str)
    if sections is not None and len(np.unique(sections[train_rows])) >= 2:
        names = np.unique(sections)
        fold = np.searchsorted(names, sections)
        how = f"cross-fitted over {len(names)} sections (each section's rows predicted by a ridge fit on the others)"
    else:
        k = min(N_RESIDUAL_FOLDS, len(train_rows))
        fold = np.empty(n, dtype=np.int64)
        kf = KFold(n_splits=k, shuffle=True, random_state=random_state)
        for f, (_, te) in enumerate(kf.split(np.arange(n))):
            fold[te] = f
        how = f"cross-fitted over {k} random folds (seeded; each fold's rows predicted by a ridge fit on the others)"
    z = np.empty_like(xs)
    rows_rec = []
    for f in np.unique(fold):
        fit = train & (fold != f)
        if fit.sum() < 2:  # a fold holding (almost) every training row: fall back to all training rows
            fit = train.copy()
        model = RidgeCV(alphas=RIDGE_ALPHAS, fit_intercept=True).fit(expr[fit], xs[fit])
        here = fold == f
        z[here] = xs[here] - model.predict(expr[here])
        rows_rec.append({"fold": int(f), "n_rows": int(here.sum()), "n_fit": int(fit.sum()), "alpha": model.alpha_})
    record = {
        "curve": pd.DataFrame(rows_rec).set_index("fold"),
        "chosen_epoch": 0,
        "description": (
            "residual: morphology features standardised on the training rows minus their ridge prediction from "
            f"the expression representation (alpha by leave-one-out over {RIDGE_ALPHAS[0]:g}..{RIDGE_ALPHAS[-1]:g}), "
            + how
        ),
        "fold": fold,
    }
    return z.astype(np.float32), record
