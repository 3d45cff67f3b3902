"""Per-gene metrics of predicted versus observed expression: Pearson r, MAE, MSE, RMSE.

Every function takes ``y_true`` and ``y_pred`` of shape ``(n_obs,)`` or ``(n_obs, n_genes)`` and returns one value
per gene (a float for 1-D input). Pearson r is NaN where the prediction or the observation is constant (its
denominator is zero), so a constant predictor never scores; :func:`summarize` excludes those genes from the mean and
counts them, as the benchmark protocol asks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._utils._stats import is_constant, pearson_columns

__all__ = ["gene_table", "is_constant", "mae", "mse", "pcc", "rmse", "summarize"]


def _prepare(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, bool]:
    yt = np.asarray(y_true.toarray() if hasattr(y_true, "toarray") else y_true, dtype=np.float64)
    yp = np.asarray(y_pred.toarray() if hasattr(y_pred, "toarray") else y_pred, dtype=np.float64)
    if yt.shape != yp.shape:
        msg = f"`y_true` and `y_pred` must have the same shape, got {yt.shape} and {yp.shape}."
        raise ValueError(msg)
    if yt.ndim not in (1, 2):
        msg = f"Expected 1-D or 2-D arrays (n_obs[, n_genes]), got {yt.ndim}-D."
        raise ValueError(msg)
    squeeze = yt.ndim == 1
    if squeeze:
        yt, yp = yt[:, None], yp[:, None]
    return yt, yp, squeeze


def _out(v: np.ndarray, squeeze: bool):
    return float(v[0]) if squeeze else v


def pcc(y_true, y_pred) -> np.ndarray | float:
    """Pearson correlation between observed and predicted values, per gene.

    Parameters
    ----------
    y_true
        Observed values, shape ``(n_obs,)`` or ``(n_obs, n_genes)``.
    y_pred
        Predicted values, same shape.

    Returns
    -------
    Pearson r per gene, shape ``(n_genes,)`` (a float for 1-D input); NaN where either column is constant, so that
    a constant prediction (for example the training mean) never gets a score. Equal to
    :func:`scipy.stats.pearsonr` elsewhere.
    """
    yt, yp, squeeze = _prepare(y_true, y_pred)
    return _out(pearson_columns(yt, yp), squeeze)


def mae(y_true, y_pred) -> np.ndarray | float:
    """Mean absolute error per gene, ``mean(|y_true - y_pred|)`` over observations (target units)."""
    yt, yp, squeeze = _prepare(y_true, y_pred)
    return _out(np.abs(yt - yp).mean(axis=0), squeeze)


def mse(y_true, y_pred) -> np.ndarray | float:
    """Mean squared error per gene, ``mean((y_true - y_pred)**2)`` over observations (target units squared)."""
    yt, yp, squeeze = _prepare(y_true, y_pred)
    return _out(((yt - yp) ** 2).mean(axis=0), squeeze)


def rmse(y_true, y_pred) -> np.ndarray | float:
    """Root mean squared error per gene, ``sqrt(mse)`` (target units)."""
    yt, yp, squeeze = _prepare(y_true, y_pred)
    return _out(np.sqrt(((yt - yp) ** 2).mean(axis=0)), squeeze)


def gene_table(y_true, y_pred, genes=None) -> pd.DataFrame:
    """All metrics per gene as a DataFrame (columns ``pcc``, ``mae``, ``mse``, ``rmse``, ``constant_in_test``).

    ``constant_in_test`` marks genes whose observed values are constant, which :func:`summarize` excludes.
    ``genes`` names the rows (one name per column of ``y_true``); default ``"0"``, ``"1"``, ...

    Raises
    ------
    ValueError
        Shapes that differ, arrays that are not 1-D or 2-D, or ``genes`` of another length than the number of genes.
    """
    yt, yp, _ = _prepare(y_true, y_pred)
    if genes is None:
        genes = [str(i) for i in range(yt.shape[1])]
    else:
        genes = [genes] if isinstance(genes, str) else list(genes)
        if len(genes) != yt.shape[1]:
            msg = (
                f"`genes` has {len(genes)} name(s) but `y_true` has {yt.shape[1]} gene column(s) (shape {yt.shape}); "
                "pass one name per column, in the columns' order (e.g. `adata.var_names` of the same genes)."
            )
            raise ValueError(msg)
    return pd.DataFrame(
        {
            "pcc": np.atleast_1d(pcc(yt, yp)),
            "mae": np.atleast_1d(mae(yt, yp)),
            "mse": np.atleast_1d(mse(yt, yp)),
            "rmse": np.atleast_1d(rmse(yt, yp)),
            "constant_in_test": is_constant(yt),
        },
        index=pd.Index(genes, name="gene"),
    )


def summarize(y_true, y_pred) -> dict[str, float | int]:
    """Mean of each metric over genes, with genes of undefined Pearson r excluded and counted.

    Returns
    -------
    ``{"pcc": mean r over genes with a defined r, "mae", "mse", "rmse": means over all genes,
    "n_genes": number of genes, "n_excluded": genes whose r is NaN (constant observation or prediction),
    "n_constant_in_test": genes constant in the observation}``.
    """
    t = gene_table(y_true, y_pred)
    ok = t["pcc"].notna()
    return {
        "pcc": float(t.loc[ok, "pcc"].mean()) if ok.any() else float("nan"),
        "mae": float(t["mae"].mean()),
        "mse": float(t["mse"].mean()),
        "rmse": float(t["rmse"].mean()),
        "n_genes": len(t),
        "n_excluded": int((~ok).sum()),
        "n_constant_in_test": int(t["constant_in_test"].sum()),
    }
