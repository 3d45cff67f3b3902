"""The integration objective: morphology features that stay relevant but share little with expression.

Box 1 of Chelebian, Avenel & Wählby (Nat. Commun. 2025), eq. 13–14: for integration, train the morphology encoder so
that it keeps task-relevant information while its information shared with expression is small, so that fusion adds
what expression lacks.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ._torch import TrainOptions


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
        ``"hsic"`` (penalise the HSIC / cross-covariance between the features and ``expr``) or ``"residual"``
        (cross-fitted residual of the features after ridge regression on ``expr``; no training).
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
    ``z`` : ndarray ``(n_obs, n_components)`` float32 (``(n_obs, n_features)`` for ``"residual"``), and ``record``,
    a dict with ``curve`` (DataFrame with one row per epoch), ``chosen_epoch``, ``description``.
    """
    msg = "the integration objective is being built"
    raise NotImplementedError(msg)
