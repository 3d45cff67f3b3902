"""What the observations of a table are called in log lines, messages, titles and labels: spots, cells, bins, tiles."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["obs_noun", "regions_noun"]

_SINGULAR = {"spots": "spot", "cells": "cell", "bins": "bin", "tiles": "tile", "grid points": "grid point"}


def _regions(adata: AnnData) -> list[str]:
    """The names of the elements the table annotates (``uns['spatialdata_attrs']['region']``), lower case."""
    attrs = adata.uns.get("spatialdata_attrs", {})
    region = attrs.get("region") if isinstance(attrs, dict) else None
    if region is None:
        return []
    return [str(r).lower() for r in ([region] if isinstance(region, str) else list(region))]


def obs_noun(adata: AnnData, n: int | None = None) -> str:
    """``"spots"``, ``"cells"``, ``"bins"``, ``"tiles"`` or ``"grid points"``: what the rows of ``adata`` are.

    Singular when ``n == 1``. Read from the table alone, never guessed from the geometry: tiles / grid points when
    every annotated element ends in ``_tiles`` (:func:`morphst.pp.tile_tissue`) / ``_grid``
    (:meth:`morphst.tl.Translator.predict_grid`); bins when one is named ``square_<size>um`` (spatialdata-io Visium
    HD); cells when one has ``cell`` in its name (spatialdata-io Xenium ``cell_circles`` / ``cell_boundaries``) or
    ``obs`` has a ``cell_id`` column (any case: Xenium, CosMx); spots otherwise (Visium, legacy ST, an AnnData).
    """
    cells = any(str(c).lower() == "cell_id" for c in adata.obs.columns)
    return regions_noun(_regions(adata), n, cells=cells)


def regions_noun(regions, n: int | None = None, *, cells: bool = False) -> str:
    """What the rows annotating the elements ``regions`` are (the rules of :func:`obs_noun`); ``cells``: a cell id."""
    regions = [str(r).lower() for r in regions]
    if regions and all(r.endswith("_tiles") for r in regions):
        noun = "tiles"
    elif regions and all(r.endswith("_grid") for r in regions):
        noun = "grid points"
    elif any(re.search(r"square_\d+um", r) for r in regions):
        noun = "bins"
    elif cells or any("cell" in r for r in regions):
        noun = "cells"
    else:
        noun = "spots"
    return _SINGULAR[noun] if n == 1 else noun
