"""Plots of translation results (:func:`morphst.tl.predict_expression`): maps and per-gene metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .._constants import Key
from .._docs import doc_image, doc_returns_fig, inject_docs, plot_params
from .._utils import check_unique_var_names, get_adata, list_keys
from ._spatial import build_panels, draw_panel, new_figure, resolve_sections
from ._utils import finish, make_axes

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

Metric = Literal["pcc", "mae", "mse", "rmse"]
_HIGHER_IS_BETTER = {"pcc": True, "mae": False, "mse": False, "rmse": False}


def _run_first(key: str) -> str:
    return f"run `mst.tl.predict_expression(adata, use_rep=..., key_added={key!r})` first"


def _check_predicted(adata: AnnData, key: str) -> dict:
    """The ``uns[key]`` of a translation, after checking that its layer is there too."""
    if key not in adata.layers:
        msg = (
            f"No predictions in `adata.layers[{key!r}]`: {_run_first(key)}. "
            f"Available layers: {list_keys(adata.layers.keys())}."
        )
        raise KeyError(msg)
    res = adata.uns.get(key)
    if not isinstance(res, dict):
        msg = f"`adata.uns[{key!r}]` (metrics and parameters of the translation) is missing: {_run_first(key)}."
        raise KeyError(msg)
    return res


def _fold_table(res: dict) -> pd.DataFrame | None:
    fm = res.get("fold_metrics")
    if fm is None:
        return None
    fm = fm if isinstance(fm, pd.DataFrame) else pd.DataFrame(fm)
    if not {"fold", "gene"} <= set(fm.columns):
        return None
    if "kind" in fm.columns:  # with patient_key: the folds behind the layer (across patients when there are some)
        kinds = set(fm["kind"].astype(str))
        fm = fm[fm["kind"].astype(str) == ("across_patient" if "across_patient" in kinds else sorted(kinds)[0])]
    return fm


def _observed_layer(adata: AnnData, res: dict, key: str, layer: str | None) -> str:
    if layer is None:
        layer = res.get("params", {}).get("target")
        if not isinstance(layer, str):
            msg = f"`adata.uns[{key!r}]['params']` names no target layer; pass `layer=` (the observed values)."
            raise KeyError(msg)
    if layer not in adata.layers:
        msg = (
            f"Observed target layer {layer!r} not found: it is written by `mst.tl.predict_expression` (or "
            f"`mst.pp.normalize`); pass `layer=`. Available layers: {list_keys(adata.layers.keys())}."
        )
        raise KeyError(msg)
    return layer


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


def _by_symbol(adata: AnnData, genes: list[str], gene_symbols: str | None) -> tuple[list[str], dict[str, str]]:
    """``genes`` named in ``var[gene_symbols]`` -> (their ``var_names``, ``{var_name: name to show}``)."""
    if gene_symbols is None:
        return genes, {g: g for g in genes}
    if gene_symbols not in adata.var.columns:
        msg = f"`gene_symbols`={gene_symbols!r} is not a var column. Available columns: {list_keys(adata.var.columns)}."
        raise KeyError(msg)
    sym = adata.var[gene_symbols].astype(str)
    ids = []
    for g in genes:
        hit = adata.var_names[(sym == g).to_numpy()]
        if len(hit) == 0:
            msg = f"Gene {g!r} not found in `var[{gene_symbols!r}]` (e.g. {list(sym.iloc[:5])})."
            raise KeyError(msg)
        if len(hit) > 1:
            msg = f"{g!r} names {len(hit)} genes in `var[{gene_symbols!r}]` ({list(hit)}); pass one of these var_names."
            raise ValueError(msg)
        ids.append(str(hit[0]))
    return ids, dict(zip(ids, genes, strict=True))


def _column(x, j: int) -> np.ndarray:
    col = x[:, j]
    col = col.toarray() if hasattr(col, "toarray") else np.asarray(col)
    return np.asarray(col, dtype=float).ravel()


@inject_docs(
    image=doc_image,
    plot_params=plot_params(ax=", ``2 × n_genes`` of them (row-major)", figsize="about 4.2 × 3.8 inches per panel"),
    returns_fig=doc_returns_fig,
)
def predicted_vs_observed(
    data: SpatialData | AnnData,
    genes: str | Sequence[str],
    *,
    predicted_key: str = Key.PREDICTED,
    library_id: str | None = None,
    library_key: str = Key.LIBRARY,
    layer: str | None = None,
    gene_symbols: str | None = None,
    table_key: str = Key.TABLE,
    image_key: str | None = None,
    image_px: int = 600,
    cmap: str = "viridis",
    same_scale: bool = False,
    alpha: float = 0.9,
    ax: Axes | Sequence[Axes] | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Observed and predicted expression of each gene as spots over the H&E of one section, side by side.

    One row per gene: observed (the translation target, e.g. ``log1p_cp10k``) on the left, the out-of-fold
    prediction of :func:`morphst.tl.predict_expression` on the right, with the gene's Pearson r in the title: the
    r of the fold that held this section out (``uns[predicted_key]["fold_metrics"]``) when the section is one fold, as in
    leave-one-section-out; otherwise the mean over folds (``var[f"{predicted_key}_pcc"]``).

    Parameters
    ----------
    data
        SpatialData (spots over the image that shares their coordinate system), or AnnData (``obsm["spatial"]``).
    genes
        Gene(s) to show; they must have been predicted (``var[f"{predicted_key}_mask"]``).
    predicted_key
        Key of the translation (``key_added`` of :func:`morphst.tl.predict_expression`).
    library_id
        Section to draw, a value of ``obs[library_key]``; ``None``: the first section.
    library_key
        ``obs`` column of the sections.
    layer
        Layer of observed values; ``None``: the target that the translation recorded in ``uns[predicted_key]["params"]``.
    gene_symbols
        ``var`` column holding the names that ``genes`` are given in and that titles show (e.g. gene symbols when
        ``var_names`` are Ensembl IDs), as in scanpy; ``None``: ``var_names``.
    table_key
        Table of a SpatialData.
    {image}
    cmap
        Colour map of the expression values.
    same_scale
        Use one colour range for observed and predicted values of a gene; by default each panel has its own
        (ridge-type predictions are shrunk towards the mean, so a shared range hides their pattern). The figure
        says which: in its suptitle (new figure), else in the title of the first predicted panel.
    alpha
        Opacity of the spots.
    {plot_params}

    Returns
    -------
    {returns_fig} Panels: ``n_genes`` rows × 2 (observed, predicted), each with a colour bar
    labelled with the scale of the values (the observed layer, and the translation target of
    ``uns[predicted_key]["params"]["target"]``, e.g. ``log1p_cp10k``, that the predictions are on).

    Raises
    ------
    KeyError
        If the translation ``predicted_key`` or the observed layer is missing (run :func:`morphst.tl.predict_expression`
        first), or a gene is not in ``var_names``.
    ValueError
        If a gene was not predicted, ``library_id`` is unknown, or ``var_names`` has duplicates.
    """
    key = predicted_key
    adata = get_adata(data, table_key)
    check_unique_var_names(adata, "mst.pl.predicted_vs_observed")
    res = _check_predicted(adata, key)
    layer = _observed_layer(adata, res, key, layer)
    genes = [genes] if isinstance(genes, str) else [str(g) for g in genes]
    if not genes:
        msg = "`genes` is empty; pass one or more predicted genes."
        raise ValueError(msg)
    genes, shown = _by_symbol(adata, genes, gene_symbols)
    mask_col = f"{key}_mask"
    predicted = (
        adata.var_names[adata.var[mask_col].to_numpy(bool)] if mask_col in adata.var.columns else adata.var_names
    )
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        msg = f"Genes not in `adata.var_names`: {missing}. Predicted genes include: {list(predicted[:10])}."
        raise KeyError(msg)
    not_pred = [g for g in genes if g not in predicted]
    if not_pred:
        msg = (
            f"Genes {not_pred} were not predicted under {key!r}. Predicted genes include: {list(predicted[:10])}"
            f"{' …' if len(predicted) > 10 else ''}."
        )
        raise ValueError(msg)
    sections = resolve_sections(adata, library_id, library_key)[:1]
    (panel,) = build_panels(
        data, sections, table_key=table_key, library_key=library_key, image_key=image_key, image_px=image_px
    )

    fold_col = f"{key}_fold"
    fm = _fold_table(res)
    folds = pd.unique(adata.obs[fold_col].iloc[panel.rows].astype(str)) if fold_col in adata.obs else []
    one_fold = str(folds[0]) if len(folds) == 1 else None

    if ax is None:
        fig, axes = new_figure(len(genes), 2, figsize=figsize, panel_size=(4.2, 3.8))
    else:
        fig, flat = make_axes(ax, 2 * len(genes))
        axes = np.asarray(flat, dtype=object).reshape(len(genes), 2)
    where = f" ({panel.name})" if panel.name else ""
    target = res.get("params", {}).get("target")
    pred_scale = f"predicted {target}" if isinstance(target, str) else f"predicted ({key})"
    scale_note = (
        "observed and predicted share one colour scale per gene"
        if same_scale
        else "own colour scale per panel; same_scale=True to share"
    )
    for i, g in enumerate(genes):
        j = adata.var_names.get_loc(g)
        obs_v = _column(adata.layers[layer], j)[panel.rows]
        pred_v = _column(adata.layers[key], j)[panel.rows]
        pcc, how = np.nan, ""
        if fm is not None and one_fold is not None and "pcc" in fm.columns:
            hit = fm[(fm["fold"].astype(str) == one_fold) & (fm["gene"].astype(str) == g)]
            if len(hit):
                pcc, how = float(hit["pcc"].iloc[0]), "held-out PCC"
        if not how and f"{key}_pcc" in adata.var.columns:
            pcc, how = float(adata.var[f"{key}_pcc"].iloc[j]), "mean PCC"
        lims = [(None, None), (None, None)]
        if same_scale:
            both = np.concatenate([obs_v, pred_v])
            lims = [(np.nanmin(both), np.nanmax(both))] * 2
        name = shown[g]
        titles = [f"{name} observed{where}", f"{name} predicted" + (f", {how} {pcc:.2f}" if how else "")]
        if not np.isfinite(pred_v).any():  # with in-fold gene selection, a fold may not have selected this gene
            titles[1] = f"{name}: not predicted here\n(not selected in this fold's training part)"
        for k, (vals, title) in enumerate(zip((obs_v, pred_v), titles, strict=True)):
            m = draw_panel(
                axes[i, k], panel, values=vals, cmap=cmap, vmin=lims[k][0], vmax=lims[k][1], alpha=alpha, title=title
            )
            if m is not None and np.isfinite(vals).any():
                label = f"observed {layer}" if k == 0 else pred_scale
                fig.colorbar(m, ax=axes[i, k], fraction=0.046, pad=0.02, label=label)
    if ax is None:
        fig.suptitle(f"{key}: {scale_note}", fontsize="medium")
    else:
        axes[0, 1].set_title(f"{axes[0, 1].get_title()}\n({scale_note})", fontsize="medium")
    return finish(fig, show=show, return_fig=return_fig)


@inject_docs(plot_params=plot_params(figsize="grows with the number of genes"), returns_fig=doc_returns_fig)
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
    res = adata.uns.get(key)
    col = f"{key}_{metric}"
    if not isinstance(res, dict) and col not in adata.var.columns:
        msg = f"No translation metrics under {key!r} (`uns[{key!r}]`, `var[{col!r}]`): {_run_first(key)}."
        raise KeyError(msg)
    fm = _fold_table(res) if isinstance(res, dict) else None
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
    n_folds, n_total = _folds_per_gene(adata, key, fm, mean.index)
    # genes predicted in every fold first: a mean over fewer folds (in-fold gene selection) is not comparable
    order = pd.DataFrame({"all": n_folds == n_total, "m": mean.to_numpy()}, index=mean.index)
    order = order.sort_values(["all", "m"], ascending=[False, not _HIGHER_IS_BETTER[metric]], kind="stable")
    mean, n_folds = mean[order.index], n_folds.reindex(order.index)
    if n_genes is not None:
        mean, n_folds = mean.iloc[: int(n_genes)], n_folds.iloc[: int(n_genes)]
    genes = [str(g) for g in mean.index]
    partial = (n_folds < n_total).to_numpy()
    if figsize is None:
        figsize = (max(5.0, 0.22 * len(genes) + 1.5), 4.0)
    fig, (a,) = make_axes(ax, 1, figsize=figsize)
    if ax is None:
        fig.set_layout_engine("constrained")
    x = np.arange(len(genes))
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
    if fm is not None:
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
    if gene_symbols is not None:
        if gene_symbols not in adata.var.columns:
            msg = f"`gene_symbols`={gene_symbols!r} is not a var column. Available: {list_keys(adata.var.columns)}."
            raise KeyError(msg)
        names = adata.var[gene_symbols].astype(str).reindex(genes).fillna(pd.Series(genes, index=genes)).tolist()
    else:
        names = genes
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
