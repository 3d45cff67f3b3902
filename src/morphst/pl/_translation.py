"""Maps of translation results (:func:`morphst.tl.predict_expression`): observed and predicted expression."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import Key
from .._docs import plot_docs
from .._utils import check_unique_var_names, get_adata, list_keys, run_first
from ._maps import panel_grid
from ._spatial import build_panels, draw_panel, resolve_sections
from ._utils import finish, gene_list

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


#: The call that writes a translation (``key_added`` added per message).
PREDICT = ("tl.predict_expression", "adata, use_rep=...")


def _check_predicted(adata: AnnData, key: str) -> dict:
    """The ``uns[key]`` of a translation, after checking that its layer is there too."""
    if key not in adata.layers:
        msg = (
            f"No predictions in `adata.layers[{key!r}]`: {run_first(*PREDICT, key=key)}. "
            f"Available layers: {list_keys(adata.layers.keys())}."
        )
        raise KeyError(msg)
    res = adata.uns.get(key)
    if not isinstance(res, dict):
        msg = (
            f"`adata.uns[{key!r}]` (metrics and parameters of the translation) is missing: "
            f"{run_first(*PREDICT, key=key)}."
        )
        raise KeyError(msg)
    return res


def fold_table(res: dict) -> pd.DataFrame | None:
    """Per-fold metrics of a translation's ``uns`` entry (the folds behind its layer), or ``None`` if absent."""
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


@plot_docs(ax=", ``2 × n_genes`` of them (row-major)", figsize="about 4.2 × 3.8 inches per panel", image=True)
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
    genes = gene_list(genes)
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
    library_key, sections = resolve_sections(adata, library_id, library_key)
    sections = sections[:1]
    (panel,) = build_panels(
        data, sections, table_key=table_key, library_key=library_key, image_key=image_key, image_px=image_px
    )

    fold_col = f"{key}_fold"
    fm = fold_table(res)
    folds = pd.unique(adata.obs[fold_col].iloc[panel.rows].astype(str)) if fold_col in adata.obs else []
    one_fold = str(folds[0]) if len(folds) == 1 else None

    fig, axes = panel_grid(ax, len(genes), 2, figsize=figsize, panel_size=(4.2, 3.8))
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
                axes[i, k], panel, values=vals, cmap=cmap, vmin=lims[k][0], vmax=lims[k][1], alpha=alpha, title=title,
                missing_label="not predicted in this fold" if k == 1 and np.isfinite(vals).any() else None,
            )  # fmt: skip
            if m is not None and np.isfinite(vals).any():
                label = f"observed {layer}" if k == 0 else pred_scale
                fig.colorbar(m, ax=axes[i, k], fraction=0.046, pad=0.02, label=label)
    if ax is None:
        fig.suptitle(f"{key}: {scale_note}", fontsize="medium")
    else:
        axes[0, 1].set_title(f"{axes[0, 1].get_title()}\n({scale_note})", fontsize="medium")
    return finish(fig, show=show, return_fig=return_fig)
