"""Internal helpers: tables, images, pyramid levels and validation."""

from ._sdata import (
    check_obs_column,
    check_obsm,
    get_adata,
    image_levels,
    list_keys,
    records_params,
)

__all__ = ["check_obs_column", "check_obsm", "get_adata", "image_levels", "list_keys", "records_params"]
