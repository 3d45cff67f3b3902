"""Helpers shared by the integration modules (``_fuse``, ``_domains``, ``_evaluate``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._constants import Key
from ..._utils import check_obs_column

if TYPE_CHECKING:
    from anndata import AnnData


def rep_hint(key: str) -> str:
    """What to run to get the representation ``obsm[key]``."""
    if key == "X_pca":
        return "Run `sc.pp.pca` (on log-normalised expression) first."
    if key.startswith("X_"):
        return f"Run `mst.tl.embed_patches(sdata, model={key[2:]!r})` first (or the function that writes {key!r})."
    return ""


def resolve_library_key(adata: AnnData, library_key: str | None) -> str | None:
    """Return the ``obs`` column that holds the sections: ``library_key``, else ``"section"`` when present."""
    if library_key is not None:
        check_obs_column(adata, library_key)
        return library_key
    return Key.LIBRARY if Key.LIBRARY in adata.obs.columns else None
