"""How much of each learned feature expression predicts: linear and non-linear, cross-validated."""

from __future__ import annotations

import numpy as np
import pandas as pd


def shared_information(
    z: np.ndarray, expr: np.ndarray, groups: np.ndarray | None = None, *, random_state: int = 0, n_folds: int = 5
) -> pd.DataFrame:
    """Cross-validated R² of each column of ``z`` ``(n, k)`` predicted from ``expr`` ``(n, e)``.

    ``r2_linear``: ridge regression (:class:`sklearn.linear_model.RidgeCV`, penalty by leave-one-out inside the
    fold); ``r2_nonlinear``: gradient-boosted trees (:class:`sklearn.ensemble.HistGradientBoostingRegressor`,
    default settings, seeded). Folds: the sections of ``groups`` when there are two or more (leave one section
    out), else ``n_folds`` seeded random folds. R² is computed on the pooled out-of-fold predictions
    (``1 - SSE / SST``; negative when worse than the mean). A feature that trees predict well but ridge does not
    shares non-linear information with expression.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, LeaveOneGroupOut

    z = np.asarray(z, dtype=np.float64)
    expr = np.asarray(expr, dtype=np.float64)
    if groups is not None and len(np.unique(np.asarray(groups).astype(str))) >= 2:
        splits = list(LeaveOneGroupOut().split(expr, groups=np.asarray(groups).astype(str)))
    else:
        splits = list(KFold(n_folds, shuffle=True, random_state=random_state).split(expr))
    rows = []
    for j in range(z.shape[1]):
        pred_l, pred_n = np.empty(len(z)), np.empty(len(z))
        for tr, te in splits:
            pred_l[te] = RidgeCV(alphas=np.logspace(-3, 4, 15)).fit(expr[tr], z[tr, j]).predict(expr[te])
            hgb = HistGradientBoostingRegressor(random_state=random_state).fit(expr[tr], z[tr, j])
            pred_n[te] = hgb.predict(expr[te])
        sst = float(((z[:, j] - z[:, j].mean()) ** 2).sum())
        rows.append(
            {
                "feature": j,
                "r2_linear": 1 - float(((z[:, j] - pred_l) ** 2).sum()) / sst if sst > 0 else np.nan,
                "r2_nonlinear": 1 - float(((z[:, j] - pred_n) ** 2).sum()) / sst if sst > 0 else np.nan,
            }
        )
    return pd.DataFrame(rows).set_index("feature")
