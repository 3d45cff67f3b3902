"""Fitting and scoring the folds of :func:`predict_expression` (gene selection, model and metrics per fold)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import _metrics as metrics
from ._genes import dense_cols
from ._model import blas_limits, chosen_alpha
from ._recipe import fit_rows

if TYPE_CHECKING:
    from anndata import AnnData

    from ._cv_plan import CVPlan
    from ._recipe import Design


@dataclass
class CVResults:
    """What :func:`run_folds` computed: the layer, the fold of each spot and the metric tables."""

    pred: np.ndarray
    fold_label: np.ndarray
    fold_metrics: pd.DataFrame
    per_fold: pd.DataFrame
    summary: pd.DataFrame
    description: str


def run_folds(adata: AnnData, plan: CVPlan) -> CVResults:
    """Fit and score every fold; the layer holds the predictions of the main kind of fold."""
    from tqdm.auto import tqdm

    from ..._settings import settings

    fold_label = np.full(adata.n_obs, None, dtype=object)
    tables, per_fold, description, held = [], [], "", []
    # closed before the "finished" line; on a terminal it clears itself, elsewhere (log file, CI) it ends its line,
    # since clearing with "\r" there would leave the bar and the log line on one line
    bar = tqdm(plan.folds, desc="folds", disable=not settings.progress_bar, leave=not _stderr_is_tty())
    with blas_limits(plan.design.x), bar:
        for name, train, test, kind in bar:
            gidx, p, table, row, description = _run_fold(plan.design, train, test)
            if kind == plan.main_kind:  # float32, as the layer holds it
                held.append((test, gidx, p.astype(np.float32)))
                fold_label[test] = name
            del p
            table.insert(0, "fold", name)
            if plan.patient_key is not None:
                table.insert(1, "kind", kind)
                row = {"kind": kind, **row}
            tables.append(table)
            per_fold.append({"fold": name, **row})
    # memory: the layer (n_obs x n_vars) is allocated after the fits, not held through them
    pred = np.full((adata.n_obs, adata.n_vars), np.nan, dtype=np.float32)
    while held:
        test, gidx, p = held.pop(0)
        pred[np.ix_(test, gidx)] = p
        del p
    fold_names = list(dict.fromkeys(f[0] for f in plan.folds))
    fm = pd.concat(tables, ignore_index=True)
    fm["fold"] = pd.Categorical(fm["fold"], categories=fold_names)
    pf = pd.DataFrame(per_fold)
    pf["fold"] = pd.Categorical(pf["fold"], categories=fold_names)
    return CVResults(pred, fold_label, fm, pf, _fold_summary(pf), description)


def _run_fold(design: Design, train: np.ndarray, test: np.ndarray):
    """Select genes on ``train``, fit, predict ``test`` and score it; returns genes, predictions and metrics."""
    gidx = design.genes_for(train)
    # memory: only the training values are dense during the fit; the test rows stay sparse until scored
    y_train, y_test = design.targets(train, gidx, test)
    est, description = fit_rows(design, train, y_train)
    train_mean = y_train.mean(axis=0)
    del y_train
    p = np.asarray(est.predict(design.x[test]), dtype=np.float64).reshape(len(test), len(gidx))
    # float64, as the metrics use it (no further copies there)
    y_test = dense_cols(y_test, np.arange(len(test)), np.arange(len(gidx)))
    t = metrics.gene_table(y_test, p, design.var_names[gidx]).reset_index()
    t["n_test"] = len(test)
    t = t[["gene", "pcc", "mae", "mse", "rmse", "n_test", "constant_in_test"]]
    ok = t["pcc"].notna()
    dev = y_test - train_mean  # squared in place: one test-size temporary
    np.square(dev, out=dev)
    row = {
        "n_train": len(train),
        "n_test": len(test),
        "n_genes": len(gidx),
        "pcc": float(t.loc[ok, "pcc"].mean()) if ok.any() else float("nan"),
        "mae": float(t["mae"].mean()),
        "mse": float(t["mse"].mean()),
        "rmse": float(t["rmse"].mean()),
        "n_excluded": int((~ok).sum()),
        "n_constant_in_test": int(t["constant_in_test"].sum()),
        "mse_train_mean": float(np.mean(dev)),
        "alpha": chosen_alpha(est),
    }
    return gidx, p, t, row, description


def _stderr_is_tty() -> bool:
    import sys

    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def _fold_summary(pf: pd.DataFrame) -> pd.DataFrame:
    """One row per kind of fold: number of folds, mean / min / max PCC over folds, mean MSE and training-mean MSE."""
    kind = pf["kind"] if "kind" in pf.columns else pd.Series("all", index=pf.index)
    rows = {}
    for k in pd.unique(kind):
        sub = pf[kind == k]
        ok = sub["pcc"].notna()
        rows[str(k)] = {
            "n_folds": len(sub),
            "pcc": float(sub.loc[ok, "pcc"].mean()) if ok.any() else float("nan"),
            "pcc_min": float(sub["pcc"].min()),
            "pcc_max": float(sub["pcc"].max()),
            "mse": float(sub["mse"].mean()),
            "mse_train_mean": float(sub["mse_train_mean"].mean()),
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "kind"
    return out


__all__ = ["CVResults", "run_folds"]
