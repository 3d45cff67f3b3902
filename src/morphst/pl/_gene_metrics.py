"""Per-gene metrics of a translation (:func:`morphst.tl.predict_expression`): bars over genes, dots over folds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .._constants import Key
from .._docs import plot_docs
from .._utils import get_adata, list_keys, run_first
from ._translation import PREDICT, fold_table
from ._utils import finish, make_axes

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

Metric = Literal["pcc", "mae", "mse", "rmse"]
_HIGHER_IS_BETTER = {"pcc": True, "mae": False, "mse": False, "rmse": False}


@plot_docs(figsize="grows with the number of genes")
def gene_metrics(
    data: SpatialData | AnnData,
    predicted_key: str = Key.PREDICTED,
    *,
    metric: Metric = "pcc",
    n_genes: int | None = None,
    gene_symbols: str | None = None,
    table_key: str = Key.TABLE,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Per-gene translation metric, sorted best first, with the spread over cross-validation folds.

    With in-fold gene selection a gene may be predicted in only some folds; its mean is over those folds only, so
    genes predicted in every fold are ranked first and the others after them (hatched bars, ``k/N`` folds in the
    tick label, from ``var[f"{predicted_key}_n_folds"]``).

    Bars show the mean over folds of the metric of :func:`morphst.tl.predict_expression` (``var[f"{predicted_key}_{metric}"]``,
    or the fold table when absent); dots show each fold's value (``uns[predicted_key]["fold_metrics"]``, folds where the
    gene was constant in the test part have no dot) and the line their range. The dashed line marks the mean over
    genes of these per-gene fold means (the log of :func:`~morphst.tl.predict_expression` reports another summary,
    the mean over folds of each fold's mean over its genes).

    Parameters
    ----------
    data
        AnnData, or SpatialData whose table ``table_key`` is used.
    predicted_key
        Key of the translation (``key_added`` of :func:`morphst.tl.predict_expression`).
    metric
        ``"pcc"`` (Pearson r, higher is better) or an error (``"mae"``, ``"mse"``, ``"rmse"``; on the target scale,
        lower is better).
    n_genes
        Show only the best ``n_genes`` genes; ``None``: all predicted genes.
    gene_symbols
        ``var`` column of the names to label the genes with (e.g. symbols when ``var_names`` are Ensembl IDs), as in
        scanpy; ``None``: ``var_names``.
    table_key
        Table of a SpatialData.
    {plot_params}

    Returns
    -------
    {returns_fig} One panel.

    Raises
    ------
    KeyError
        If the translation ``predicted_key`` is missing (run :func:`morphst.tl.predict_expression` first).
    ValueError
        If ``metric`` is unknown or was not computed, or ``n_genes`` is not a positive integer.
    """
    key = predicted_key
    if metric not in _HIGHER_IS_BETTER:
        msg = f"`metric` must be one of {list(_HIGHER_IS_BETTER)}, got {metric!r}."
        raise ValueError(msg)
    if n_genes is not None and (isinstance(n_genes, bool) or not isinstance(n_genes, int | np.integer) or n_genes < 1):
        msg = f"`n_genes` must be a positive integer (the best genes to show) or None (all), got {n_genes!r}."
        raise ValueError(msg)
    adata = get_adata(data, table_key)
    mean, fm = _gene_means(adata, key, metric)
    mean, n_folds, n_total = _ranked(adata, key, metric, mean, fm, n_genes)
    genes = [str(g) for g in mean.index]
    partial = (n_folds < n_total).to_numpy()
    if figsize is None:
        figsize = (max(5.0, 0.22 * len(genes) + 1.5), 4.0)
    fig, (a,) = make_axes(ax, 1, figsize=figsize)
    if ax is None:
        fig.set_layout_engine("constrained")
    x = np.arange(len(genes))
    _draw_bars(a, x, mean, partial, n_total)
    if fm is not None:
        _draw_folds(a, x, fm, genes, metric)
    a.axhline(
        float(mean.mean()),
        color="k",
        linestyle="--",
        linewidth=0.8,
        label=f"mean over genes of per-gene fold means {mean.mean():.3f}",
    )
    if metric == "pcc":
        a.axhline(0, color="grey", linewidth=0.6)
    a.set_xticks(x)
    names = _gene_labels(adata, genes, gene_symbols)
    a.set_xticklabels(
        [f"{g} ({int(k)}/{n_total})" if p else g for g, k, p in zip(names, n_folds, partial, strict=True)],
        rotation=90,
        fontsize="small",
    )
    a.set_xlim(-0.7, len(genes) - 0.3)
    a.set_ylabel({"pcc": "Pearson r (held-out)"}.get(metric, f"{metric.upper()} (held-out)"))
    a.set_title(f"{key}: per-gene {metric.upper()}, best first")
    a.legend(loc="best", fontsize="small", framealpha=0.8)
    return finish(fig, show=show, return_fig=return_fig)


def _gene_means(adata: AnnData, key: str, metric: str) -> tuple[pd.Series, pd.DataFrame | None]:
    """Mean over folds of ``metric`` per predicted gene (``var``, else the fold table), and the fold table."""
    res = adata.uns.get(key)
    col = f"{key}_{metric}"
    if not isinstance(res, dict) and col not in adata.var.columns:
        msg = f"No translation metrics under {key!r} (`uns[{key!r}]`, `var[{col!r}]`): {run_first(*PREDICT, key=key)}."
        raise KeyError(msg)
    fm = fold_table(res) if isinstance(res, dict) else None
    if fm is not None and metric not in fm.columns:
        fm = None
    if col in adata.var.columns:
        mean = adata.var[col].astype(float)
        mean = mean[mean.notna()]
        if f"{key}_mask" in adata.var.columns:
            mean = mean[adata.var.loc[mean.index, f"{key}_mask"].to_numpy(bool)]
    elif fm is not None:
        mean = fm.groupby(fm["gene"].astype(str))[metric].mean().dropna()
    else:
        msg = f"Metric {metric!r} was not computed under {key!r}: `var[{col!r}]` and the fold table lack it."
        raise ValueError(msg)
    if mean.empty:
        msg = f"No gene has a {metric!r} value under {key!r} (all constant in their test folds?)."
        raise ValueError(msg)
    return mean, fm


def _ranked(
    adata: AnnData, key: str, metric: str, mean: pd.Series, fm: pd.DataFrame | None, n_genes: int | None
) -> tuple[pd.Series, pd.Series, int]:
    """``(mean, folds per gene, number of folds)`` of the best ``n_genes`` genes, best first."""
    n_folds, n_total = _folds_per_gene(adata, key, fm, mean.index)
    # genes predicted in every fold first: a mean over fewer folds (in-fold gene selection) is not comparable
    order = pd.DataFrame({"all": n_folds == n_total, "m": mean.to_numpy()}, index=mean.index)
    order = order.sort_values(["all", "m"], ascending=[False, not _HIGHER_IS_BETTER[metric]], kind="stable")
    mean, n_folds = mean[order.index], n_folds.reindex(order.index)
    if n_genes is not None:
        mean, n_folds = mean.iloc[: int(n_genes)], n_folds.iloc[: int(n_genes)]
    return mean, n_folds, n_total


def _draw_bars(a: Axes, x: np.ndarray, mean: pd.Series, partial: np.ndarray, n_total: int) -> None:
    """Bars of the per-gene means; hatched for genes predicted in fewer than all folds."""
    a.bar(x[~partial], mean.to_numpy()[~partial], color="#8fb3d9", edgecolor="none", label="mean over folds", zorder=1)
    if partial.any():
        a.bar(
            x[partial],
            mean.to_numpy()[partial],
            color="#d9d9d9",
            edgecolor="#8fb3d9",
            hatch="//",
            label=f"predicted in fewer than all {n_total} folds (label: k/{n_total}); ranked after the others",
            zorder=1,
        )


def _draw_folds(a: Axes, x: np.ndarray, fm: pd.DataFrame, genes: list[str], metric: str) -> None:
    """A dot per fold (jittered, seed 0) and a line over the range of the folds of each gene."""
    sub = fm[fm["gene"].astype(str).isin(genes)]
    pos = {g: i for i, g in enumerate(genes)}
    gx = sub["gene"].astype(str).map(pos).to_numpy(dtype=float)
    vals = sub[metric].to_numpy(dtype=float)
    ok = np.isfinite(vals)
    rng = np.random.default_rng(0)
    a.scatter(
        gx[ok] + rng.uniform(-0.18, 0.18, ok.sum()),
        vals[ok],
        s=9,
        color="#1f3b5c",
        zorder=3,
        label=f"per fold ({sub['fold'].nunique()} folds)",
    )
    spread = sub[ok].groupby(sub["gene"].astype(str)[ok])[metric].agg(["min", "max"]).reindex(genes)
    a.vlines(x, spread["min"], spread["max"], color="#1f3b5c", linewidth=0.8, zorder=2)


def _gene_labels(adata: AnnData, genes: list[str], gene_symbols: str | None) -> list[str]:
    """Names to label ``genes`` with: ``var[gene_symbols]`` (``var_names`` where it has none), else ``genes``."""
    if gene_symbols is None:
        return genes
    if gene_symbols not in adata.var.columns:
        msg = f"`gene_symbols`={gene_symbols!r} is not a var column. Available: {list_keys(adata.var.columns)}."
        raise KeyError(msg)
    return adata.var[gene_symbols].astype(str).reindex(genes).fillna(pd.Series(genes, index=genes)).tolist()


def _folds_per_gene(adata: AnnData, key: str, fm: pd.DataFrame | None, genes: pd.Index) -> tuple[pd.Series, int]:
    """Folds that predicted each gene, and the number of folds (from ``var`` or the fold table)."""
    col = f"{key}_n_folds"
    res = adata.uns.get(key)
    pf = res.get("per_fold") if isinstance(res, dict) else None
    if fm is not None:
        counts = fm.groupby(fm["gene"].astype(str), observed=True)["fold"].nunique()
        n_total = int(fm["fold"].astype(str).nunique())
    elif col in adata.var.columns:
        counts = adata.var[col].astype(int)
        n_total = len(pf) if pf is not None else int(counts.max())
    else:  # no record of folds: every gene counts as predicted everywhere
        return pd.Series(1, index=genes), 1
    return counts.reindex(genes).fillna(0).astype(int), max(n_total, 1)
