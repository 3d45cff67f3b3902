"""Internal helpers: tables, images, pyramid levels and validation."""

from ._genes import check_unique_var_names
from ._hints import rep_hint, run_first
from ._noun import obs_noun
from ._sdata import (
    affine_xy,
    bool_column,
    check_coordinates,
    check_obs_column,
    check_obsm,
    get_adata,
    image_levels,
    list_keys,
    records_params,
    shape_centroids,
)
from ._sections import resolve_library_key, section_groups
from ._write import save_results

__all__ = [
    "affine_xy",
    "bool_column",
    "check_coordinates",
    "check_obs_column",
    "check_obsm",
    "check_unique_var_names",
    "get_adata",
    "image_levels",
    "list_keys",
    "obs_noun",
    "records_params",
    "rep_hint",
    "resolve_library_key",
    "run_first",
    "save_results",
    "section_groups",
    "shape_centroids",
]
