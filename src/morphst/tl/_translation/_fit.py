"""`fit_translator`: the recipe and fit step of `predict_expression` on chosen spots, returned as a `Translator`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_data, inject_docs
from ..._utils import get_adata, list_keys, obs_noun, records_params
from ..._utils._spots import spot_mask
from ._applicability import ApplicabilityDomain
from ._io import canonical_arrays
from ._model import blas_limits, chosen_alpha
from ._recipe import RECIPE, Recipe, fit_rows, recipe_parameters
from ._translator import Translator

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


@recipe_parameters()
@inject_docs(data=doc_data)
def fit_translator(
    data: AnnData | SpatialData,
    use_rep=RECIPE,
    *,
    train: str | np.ndarray | Sequence[str] | None = None,
    stain_reference: Any = None,
    recipe: Recipe,
    table_key: str = Key.TABLE,
    random_state=RECIPE,
) -> Translator:
    """Fit a morphology -> expression model on (a subset of) the spots and return it as a :class:`Translator`.

    The recipe and fit step of one fold of :func:`predict_expression`, so a translator fit on the training sections
    of a fold reproduces that fold's out-of-fold predictions exactly. Apply it with :meth:`Translator.predict_sdata`
    to a new H&E section (no expression needed) or with :meth:`Translator.predict_grid` to a dense grid of patches.

    Parameters
    ----------
    {data}
    train
        Training spots: ``None`` (all), a boolean ``obs`` column name, a boolean array, integer positions, or a
        list of ``library_key`` values (e.g. ``["C2", "C4", "C5", "C6"]``).
    stain_reference
        A :class:`squidpy.experimental.im.StainReference` (``squidpy.experimental.im.fit_stain_reference``) that the
        training images were normalised to before their patches were embedded, or ``None``. Stored (its arrays), so
        :meth:`Translator.predict_sdata` normalises a new section's image to it (tissue mask by
        ``squidpy.experimental.im.detect_tissue`` when the image has none) before cutting patches.
    random_state
        It seeds the PCA and MLP.

    Returns
    -------
    The fitted :class:`Translator`; the data are not modified.

    Raises
    ------
    KeyError
        If ``use_rep``, the gene column, the target layer, ``library_key`` (see above) or a training group is
        missing.
    ValueError
        Bad ``regressor``, ``spatial_context``, ``alphas`` or ``train`` (fewer than 2 spots); NaN in
        ``obs[library_key]``; duplicated ``var_names``; no gene passing the selection; ``X`` not raw counts when the
        target must be computed from it.
    """
    adata = get_adata(data, table_key)
    design = recipe.design(adata)
    stain = _stain_state(stain_reference)
    rows = np.flatnonzero(resolve_train(adata, train, design.groups, recipe.library_key))
    gidx = design.genes_for(rows)
    design.warn_caps()
    start = logg.info(f"fitting a translator on {len(rows)} {obs_noun(adata, len(rows))} from `obsm[{use_rep!r}]`")
    with blas_limits(design.x):
        est, description = fit_rows(design, rows, design.targets(rows, gidx)[0])
        canonical_arrays(est)  # C-order arrays, as the translator file stores them: same predictions after a save
        domain = ApplicabilityDomain.fit(  # before scale_per_library, which would hide a section-wide shift
            design.unscaled()[rows],
            None if design.groups is None else design.groups[rows],
            random_state=random_state,
            before_scaling=recipe.scale_per_library,
        )
    tr = Translator(
        est,
        adata.var_names[gidx],
        recipe=recipe.record(),
        n_features=design.x.shape[1],
        blocks=design.blocks,
        patch_params=_recorded_params(adata, Key.PATCHES),
        embed_params=_recorded_params(adata, use_rep),
        context_embed_params={k: _recorded_params(adata, k) for k in recipe.context_rep or ()},
        fit=records_params(
            gene_selection=design.genes.record(),
            model_description=description,
            stain_method=None if stain is None else stain["method"],
            n_train=len(rows),
            alpha=chosen_alpha(est),
            spatial_context_capped=design.caps,
        ),
        applicability=domain,
        stain_reference=stain,
    )
    logg.info(f"    finished: {tr!r}", time=start)
    return tr


def _recorded_params(adata: AnnData, key: str) -> dict:
    """``uns[key]['params']`` as written by ``extract_patches`` / ``embed_patches`` (``{}`` when not written)."""
    entry = adata.uns[key] if key in adata.uns else {}
    return dict(entry["params"]) if isinstance(entry, dict) and "params" in entry else {}


def _stain_state(ref) -> dict | None:
    """The arrays of a squidpy ``StainReference`` (stored in the translator), or ``None``."""
    if ref is None:
        return None
    if isinstance(ref, dict):
        return dict(ref)
    fields = ("stain_matrix", "mu", "sigma", "white_point", "max_concentrations")
    if not hasattr(ref, "method") or not all(hasattr(ref, f) for f in fields):
        msg = (
            "`stain_reference` must be a squidpy StainReference (`squidpy.experimental.im.fit_stain_reference`) "
            f"or None, got {type(ref).__name__}."
        )
        raise TypeError(msg)
    out = {"method": str(ref.method)}
    for f in fields:
        v = getattr(ref, f)
        if v is not None:
            out[f] = np.asarray(v, dtype=np.float64)
    return out


def resolve_train(adata: AnnData, train, groups: np.ndarray | None, library_key: str | None) -> np.ndarray:
    """Boolean ``(n_obs,)`` mask of training spots from ``train`` (see :func:`fit_translator`)."""
    if train is not None and not isinstance(train, str | np.ndarray) and all(isinstance(t, str) for t in train):
        if groups is None:
            msg = f"`train` lists groups but `library_key`={library_key!r} is not an obs column."
            raise KeyError(msg)
        missing = [t for t in train if t not in set(map(str, pd.unique(groups)))]
        if missing:
            msg = (
                f"Training groups {missing} not in `adata.obs[{library_key!r}]`: "
                f"{list_keys(map(str, pd.unique(groups)))}."
            )
            raise KeyError(msg)
        m = np.isin(groups.astype(str), list(train))
        if m.sum() < 2:
            msg = f"`train` selects {int(m.sum())} spot(s) (groups {list(train)}); at least 2 are needed to fit."
            raise ValueError(msg)
        return m
    return spot_mask(adata, train, name="train", purpose="fit")
