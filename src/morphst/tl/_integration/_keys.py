"""Helpers shared by the integration modules (``_fuse``, ``_domains``, ``_evaluate``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._constants import Key
from ..._utils import check_obs_column
from ..._utils._labels import check_section_labels

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
    """The ``obs`` column that holds the sections, or ``None`` (one section).

    ``None``, or the default :attr:`Key.LIBRARY` when ``adata`` has no such column: one section. Any other missing
    column is a :class:`KeyError` that lists the columns; labels of mixed types (``1`` and ``"1"``) a
    :class:`ValueError`.
    """
    if library_key is None or (library_key == Key.LIBRARY and library_key not in adata.obs.columns):
        return None
    check_obs_column(adata, library_key)
    check_section_labels(adata, library_key)
    return library_key
