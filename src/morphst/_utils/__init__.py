"""Internal helpers: tables, images, pyramid levels and validation."""

from ._genes import check_unique_var_names
from ._sdata import (
    affine_xy,
    bool_column,
    check_obs_column,
    check_obsm,
    get_adata,
    image_levels,
    list_keys,
    records_params,
    shape_centroids,
)

__all__ = [
    "affine_xy",
    "bool_column",
    "check_obs_column",
    "check_obsm",
    "check_unique_var_names",
    "get_adata",
    "image_levels",
    "list_keys",
    "records_params",
    "shape_centroids",
]
