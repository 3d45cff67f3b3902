"""Domain maps over the H&E, optionally next to a reference annotation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import Key
from .._docs import plot_docs
from .._utils import check_obs_column, get_adata, obs_noun, run_first
from ._spatial import (
    build_panels,
    category_colors,
    draw_panel,
    new_figure,
    reference_colors,
    resolve_sections,
    visible_on_he,
)
from ._utils import finish, make_axes

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

_MISSING = "lightgrey"


def _categorical(adata: AnnData, key: str) -> tuple[pd.Series, list[str]]:
    col = adata.obs[key]
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in col.cat.categories]
    else:
        from natsort import natsorted

        cats = natsorted({str(v) for v in col.dropna()})
    labels = col.astype("object").where(col.notna(), None).map(lambda v: None if v is None else str(v))
    return labels, cats


@plot_docs(
    ax=", one per panel (``n_sections`` or ``2 × n_sections`` with ``annotation_key``, row-major)",
    figsize="about 3.6 inches per panel",
    image=True,
)
def domains(
    data: SpatialData | AnnData,
    domain_key: str = Key.DOMAIN,
    *,
    annotation_key: str | None = None,
    library_id: str | Sequence[str] | None = None,
    library_key: str = Key.LIBRARY,
    table_key: str = Key.TABLE,
    image_key: str | None = None,
    image_px: int = 600,
    alpha: float = 0.85,
    match_colors: bool = True,
    legend: bool = True,
    ax: Axes | Sequence[Axes] | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | None:
    """Spatial domains as coloured spots over the H&E, one panel per section, optionally above a reference.

    Reads the categorical ``obs[domain_key]`` written by :func:`morphst.tl.domains` and, when present, the ARI/NMI
    that :func:`morphst.tl.evaluate_domains` stored in ``uns[f"{domain_key}_evaluation"]`` (shown in the figure title, with the
    number of spots left out of ARI/NMI because their reference or domain is missing). The H&E is drawn from a
    coarse pyramid level; spots are placed through the SpatialData transformations and drawn at their true radius.
    With ``annotation_key`` and ``match_colors``, each domain takes the colour of the reference category it overlaps
    most, under a one-to-one matching (Hungarian algorithm on the spot counts, scipy ``linear_sum_assignment``);
    domains left unmatched (more domains than categories) get colours no category uses, and the legend names the
    match. Otherwise domain colours come from ``uns[f"{domain_key}_colors"]`` when it matches the categories
    (scanpy's convention), else from scanpy's default palettes, and the reference row uses a different qualitative
    palette (matplotlib's ``Dark2``, ``Set2``, ``Set3``), so equal colours never suggest a match. Default palettes
    leave out colours close to haematoxylin or eosin (CIELAB ΔE below 25), which would fade into the stain.
    Missing labels are light grey. With one section, the two rows are drawn side by side.

    Parameters
    ----------
    data
        SpatialData (spots drawn over the image that shares their coordinate system), or an AnnData (spots drawn
        at ``obsm["spatial"]``, no image).
    domain_key
        ``obs`` column of the domains.
    annotation_key
        ``obs`` column of a reference annotation (e.g. ``"cluster"``), drawn in a second row.
    library_id
        Section(s) to draw, values of ``obs[library_key]``; ``None``: every section.
    library_key
        ``obs`` column of the sections.
    table_key
        Table of a SpatialData.
    {image}
    alpha
        Opacity of the spots.
    match_colors
        With ``annotation_key``: colour each domain like the reference category it is matched to (see above).
    legend
        Draw one legend per row, right of its last panel.
    {plot_params}

    Returns
    -------
    {returns_fig} Panels: one per section and row (domains, then reference).

    Raises
    ------
    KeyError
        If ``obs[domain_key]`` is missing (run :func:`morphst.tl.domains` first), or ``annotation_key`` /
        ``library_key`` is missing (the message lists the columns).
    ValueError
        If a section is not in ``obs[library_key]``.
    """
    adata = get_adata(data, table_key)
    key, reference = domain_key, annotation_key
    check_obs_column(adata, key, hint=f"For domains, {run_first('tl.domains', 'adata, use_rep=...', key=key)}.")
    if reference is not None:
        check_obs_column(adata, reference)
    library_key, sections = resolve_sections(adata, library_id, library_key)
    panels = build_panels(
        data, sections, table_key=table_key, library_key=library_key, image_key=image_key, image_px=image_px
    )
    rows = [key] + ([reference] if reference is not None else [])
    ncols = len(panels)
    side_by_side = ax is None and len(rows) == 2 and ncols == 1
    if side_by_side:  # one section: domains and reference side by side, not stacked
        fig, axes = new_figure(1, 2, figsize=figsize, panel_size=(3.6, 3.8))
        axes = axes.reshape(2, 1)
    elif ax is None:
        fig, axes = new_figure(len(rows), ncols, figsize=figsize, panel_size=(3.6, 3.8))
    else:
        fig, flat = make_axes(ax, len(rows) * ncols)
        axes = np.asarray(flat, dtype=object).reshape(len(rows), ncols)

    matched: dict[str, str] = {}
    if reference is not None and match_colors:
        matched = match_categories(adata.obs[key], adata.obs[reference])
    for i, col_key in enumerate(rows):
        labels, cats = _categorical(adata, col_key)
        cmap = category_colors(adata, col_key, cats) if i == 0 else reference_colors(cats)
        if i == 0 and matched:
            cmap = _matched_colors(cats, matched, reference_colors(_categorical(adata, reference)[1]))
        for j, panel in enumerate(panels):
            lab = labels.iloc[panel.rows]
            colors = [cmap.get(v, _MISSING) if v is not None else _MISSING for v in lab]
            title = f"{panel.name}: {col_key}" if panel.name else col_key
            draw_panel(axes[i, j], panel, colors=colors, alpha=alpha, title=title)
        if legend:
            from matplotlib.patches import Patch

            handles = [
                Patch(color=cmap[c], label=f"{c} ~ {matched[c]}" if i == 0 and c in matched else c) for c in cats
            ]
            if labels.isna().any():
                handles.append(Patch(color=_MISSING, label="NA"))
            where = {"loc": "center left", "bbox_to_anchor": (1.02, 0.5)}
            if side_by_side:  # under each panel, so the left legend does not cover the right panel
                where = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.02), "ncols": 2}
            axes[i, -1].legend(handles=handles, title=col_key, frameon=False, **where)
    ev = adata.uns.get(f"{key}_evaluation")
    if reference is not None and isinstance(ev, dict) and "ari" in ev:
        p = ev.get("params", {})
        if p.get("annotation_key") == reference:
            if "n_evaluated" in ev and "n_excluded" in ev:
                n_ev, n_ex = int(ev["n_evaluated"]), int(ev["n_excluded"])
                spots = f"{n_ev} {obs_noun(adata, n_ev)}; {n_ex} with no {reference} or {key} label excluded"
            else:
                spots = f"{obs_noun(adata)} with both labels"
            fig.suptitle(
                f"{key} vs {reference}: ARI {ev['ari']:.2f}, NMI {ev['nmi']:.2f} ({spots}; mst.tl.evaluate_domains)"
            )
    return finish(fig, show=show, return_fig=return_fig)


def match_categories(domains: pd.Series, reference: pd.Series) -> dict[str, str]:
    """One-to-one matching of domains to reference categories maximising the spots they share (Hungarian).

    Returns ``{domain: reference category}`` for the matched domains (spots missing either label are ignored).
    """
    from scipy.optimize import linear_sum_assignment

    ok = domains.notna().to_numpy() & reference.notna().to_numpy()
    if not ok.any():
        return {}
    table = pd.crosstab(domains[ok].astype(str).to_numpy(), reference[ok].astype(str).to_numpy())
    r, c = linear_sum_assignment(-table.to_numpy())
    return {str(table.index[i]): str(table.columns[j]) for i, j in zip(r, c, strict=True) if table.iat[i, j] > 0}


def _matched_colors(cats: list[str], matched: dict[str, str], ref_colors: dict[str, str]) -> dict[str, str]:
    """Matched domains take their category's colour; the others, scanpy colours visible over H&E that no category
    uses."""
    from scanpy.pl import palettes

    used = {v.lower() for v in ref_colors.values()}
    spare = iter([c for c in visible_on_he(palettes.default_102) if c.lower() not in used])
    return {c: ref_colors[matched[c]] if c in matched else next(spare) for c in cats}
