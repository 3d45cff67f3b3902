"""The model inputs of the translation functions: features (own patch, context patches), spatial context, target.

Shared by :func:`~morphst.tl.predict_expression`, :func:`~morphst.tl.fit_translator`, :class:`~morphst.tl.Translator`
and :func:`~morphst.tl.learn_translation_features` (through :class:`~morphst.tl._translation._recipe.Recipe`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from ..._utils import check_obsm
from ..._utils._hints import rep_hint
from ._features import check_spatial_context, context_coords, model_inputs, scale_per_group
from ._genes import target_matrix

if TYPE_CHECKING:
    from anndata import AnnData


@dataclass
class Inputs:
    """Validated model inputs of one table: features (own, context patches), spatial context, target."""

    x: np.ndarray  # own patch features (n_obs, n_own)
    k_ctx: int | None  # neighbours of the spatial context
    coords: np.ndarray | None
    context: list[tuple[str, np.ndarray]]  # (block name, (n_obs, d)) per context_rep
    y: Any = None  # target matrix (CSR if sparse); None for a fitted translator's new data
    store_target: bool = False  # the 'log1p_cp10k' target was computed here and is to be stored

    def features(self, groups: np.ndarray | None, *, global_context: bool, scale: bool):
        """``(features, blocks)`` of :func:`model_inputs`, standardised per section when ``scale``."""
        feats, blocks = model_inputs(
            self.x, self.coords, self.k_ctx, groups, context=self.context, global_context=global_context
        )
        return (scale_per_group(feats, groups) if scale else feats), blocks


def context_arrays(adata: AnnData, context_rep) -> list[tuple[str, np.ndarray]]:
    """``[(block name, obsm array), ...]`` for the ``context_rep`` keys (``None``, a key or a list of keys)."""
    if context_rep is None:
        return []
    keys = [context_rep] if isinstance(context_rep, str) else list(context_rep)
    hint = (
        "Embed the context patches with `mst.tl.embed_patches(sdata, model, context_index=k, key_added=...)` after "
        "`mst.pp.extract_patches(..., context_sizes_um=...)`."
    )
    return [(f"context:{k}", check_obsm(adata, k, hint=hint)) for k in keys]


def read_inputs(adata: AnnData, use_rep: str, target: str, spatial_context, context_rep=None) -> Inputs:
    """Validate and return the model inputs (features, spatial context, context patches, target)."""
    x = check_obsm(adata, use_rep, hint=rep_hint(use_rep))
    k_ctx = check_spatial_context(spatial_context)
    coords = context_coords(adata, k_ctx)
    context = context_arrays(adata, context_rep)
    if len(x) > 1 and not any(np.any(np.ptp(a, axis=0) > 0) for a in [x, *(c for _, c in context)]):
        reps = " and ".join(
            f"`adata.obsm[{k!r}]`" for k in [use_rep, *(n.removeprefix("context:") for n, _ in context)]
        )
        msg = (
            f"{reps} {'are' if context else 'is'} the same for every observation: the predictions will be too, and "
            "their PCC undefined (NaN). Check how the features were made (e.g. patches outside the image, or an "
            "image without texture, give constant features)."
        )
        warnings.warn(msg, UserWarning, stacklevel=4)
    y, store_target = target_matrix(adata, target)
    if sparse.issparse(y):
        y = y.tocsr()
    return Inputs(x, k_ctx, coords, context, y, store_target)


def context_keys(context_rep) -> list[str] | None:
    """``context_rep`` as a list of keys (``None`` stays ``None``)."""
    if context_rep is None:
        return None
    return [context_rep] if isinstance(context_rep, str) else [str(k) for k in context_rep]


def check_global_context(global_context) -> None:
    """``ValueError`` unless ``global_context`` is a boolean."""
    if not isinstance(global_context, bool | np.bool_):
        msg = f"`global_context` must be True or False, got {global_context!r}."
        raise ValueError(msg)


def check_scaling(scale_per_library: bool, groups, library_key, adata: AnnData) -> None:
    """``KeyError`` when per-section scaling is asked without a section column."""
    if scale_per_library and groups is None:
        msg = (
            f"`scale_per_library=True` standardises features within each section of `obs[library_key]`, but "
            f"`library_key`={library_key!r} is not an obs column. Available columns: {list(adata.obs.columns)[:20]}."
        )
        raise KeyError(msg)


def fitted_inputs(adata: AnnData, use_rep: str, blocks: list[tuple[str, int]], spatial_context: int | None) -> Inputs:
    """The inputs of new data for a fitted translator: ``obsm`` arrays checked against the training ``blocks``."""
    x = check_obsm(adata, use_rep, hint=rep_hint(use_rep))
    widths = dict(blocks)
    context = context_arrays(adata, [n.removeprefix("context:") for n, _ in blocks if n.startswith("context:")] or None)
    for name, width, got in [("patch", widths["patch"], x.shape[1]), *((n, widths[n], c.shape[1]) for n, c in context)]:
        if got != width:
            key = use_rep if name == "patch" else name.removeprefix("context:")
            msg = (
                f"`obsm[{key!r}]` has {got} features; the translator was fit on {width}. Embed with the same model "
                "as the training data."
            )
            raise ValueError(msg)
    return Inputs(x, spatial_context, context_coords(adata, spatial_context), context)
