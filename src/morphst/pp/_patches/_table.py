"""Which spots: the SpatialData a patch function needs, the shapes its table annotates and their rows there."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from anndata import AnnData


def table_regions(adata: AnnData) -> tuple[list[str], str, str]:
    from spatialdata.models import get_table_keys

    if "spatialdata_attrs" not in adata.uns:
        msg = (
            "The table does not annotate any shapes (no `uns['spatialdata_attrs']`); parse it with "
            "`spatialdata.models.TableModel.parse(adata, region=..., region_key=..., instance_key=...)`."
        )
        raise ValueError(msg)
    region, region_key, instance_key = get_table_keys(adata)
    regions = [region] if isinstance(region, str) else list(region)
    return regions, region_key, instance_key


def match_instance_ids(ids: np.ndarray, index: pd.Index, region: str) -> np.ndarray:
    """Positions in the shapes ``index`` of the table's instance ``ids``, after a safe cast between str and int.

    Raises
    ------
    ValueError
        If ids are missing from the shapes (after casting), naming both dtypes and examples.
    """
    idx = pd.Index(index)
    pos = idx.get_indexer(ids) if idx.is_unique else None
    if pos is None:
        msg = f"The index of shapes {region!r} has duplicated values; spots/cells must have unique ids."
        raise ValueError(msg)
    if (pos < 0).any():
        # str vs int ids ("12" vs 12) are common after CSV/zarr round trips: compare both as strings
        as_str = pd.Index(idx.astype(str))
        if as_str.is_unique:
            pos2 = as_str.get_indexer(pd.Index(ids).astype(str))
            if not (pos2 < 0).any():
                return pos2
        missing = pd.Index(ids)[pos < 0]
        msg = (
            f"{len(missing)} of {len(ids)} instance ids of the table (e.g. {list(missing[:3])}, dtype "
            f"{pd.Index(ids).dtype}) are not in the index of shapes {region!r} (e.g. {list(idx[:3])}, dtype "
            f"{idx.dtype}), even compared as strings. The table's instance_key column must hold the shapes' index "
            "values (see `spatialdata.models.TableModel.parse(..., instance_key=...)`)."
        )
        raise ValueError(msg)
    return pos
