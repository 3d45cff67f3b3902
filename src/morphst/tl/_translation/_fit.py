"""`fit_translator`: fit the fold recipe of `predict_expression` on chosen spots and return a `Translator`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_data, doc_library_key, doc_random_state, inject_docs
from ..._utils import get_adata, list_keys, records_params
from ...pp._genes import resolve_mask
from ._applicability import ApplicabilityDomain
from ._io import canonical_arrays

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData
from ._features import context_caps, warn_caps
from ._folds import section_groups
from ._genes import dense_cols, make_gene_plan
from ._inputs import check_global_context, check_scaling, context_keys, read_inputs
from ._model import (
    DEFAULT_ALPHAS,
    blas_limits,
    check_alphas,
    check_model,
    chosen_alpha,
    fit_model,
    make_model,
    validate_random_state,
)
from ._translator import Translator


def _embedding_params(adata: AnnData, use_rep: str) -> dict:
    """Parameters that the embedding step stored for ``use_rep`` (if any)."""
    for key in (use_rep, use_rep.removeprefix("X_"), f"embed_{use_rep.removeprefix('X_')}"):
        v = adata.uns.get(key)
        if isinstance(v, dict) and isinstance(v.get("params"), dict):
            return dict(v["params"])
    return {}


@inject_docs(data=doc_data, library_key=doc_library_key, random_state=doc_random_state)
def fit_translator(
    data: AnnData | SpatialData,
    use_rep: str = Key.DEFAULT_REP,
    *,
    genes: str | Sequence[str] = Key.MORPH_TARGET,
    target: str = Key.TARGET,
    model: Literal["ridge", "mlp", "head"] | Any = "ridge",
    train: str | np.ndarray | Sequence[str] | None = None,
    library_key: str | None = Key.LIBRARY,
    select_on_train: bool = True,
    spatial_context: int | None = None,
    context_rep: str | Sequence[str] | None = None,
    global_context: bool = False,
    scale_per_library: bool = False,
    stain_reference: Any = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    table_key: str = Key.TABLE,
    random_state: int = 0,
) -> Translator:
    """Fit a morphology -> expression model on (a subset of) the spots and return it as a :class:`Translator`.

    The same recipe as one fold of :func:`predict_expression` (same genes rule, model, inner cross-validation and
    features), so a translator fit on the training sections of a fold reproduces that fold's out-of-fold
    predictions exactly. Apply it with :meth:`Translator.predict_sdata` to a new H&E section (no expression needed)
    or with :meth:`Translator.predict_grid` to a dense grid of patches between and around the spots.

    Parameters
    ----------
    {data}
    use_rep
        ``obsm`` key of the morphological features.
    genes
        Target genes: a boolean ``var`` column or a list of names. With ``select_on_train=True`` and a column
        written by :func:`morphst.pp.select_genes`, the selection is rerun on the training spots with its stored
        parameters.
    target
        ``"log1p_cp10k"`` (computed from raw counts in ``X`` if the layer is missing), a layer name or ``"X"``.
    model
        ``"ridge"``, ``"mlp"``, ``"head"`` (:class:`~morphst.tl.FeatureHead`, stored as arrays) or a scikit-learn
        regressor (see :func:`predict_expression`).
    train
        Training spots: ``None`` (all), a boolean ``obs`` column name, a boolean array, integer positions, or a
        list of ``library_key`` values (e.g. ``["C2", "C4", "C5", "C6"]``).
    {library_key}
        Its sections are the inner cross-validation groups, the spatial neighbourhoods and the units of feature
        scaling.
    select_on_train
        Re-select the genes on the training spots (see ``genes``).
    spatial_context
        ``k`` spatial neighbours whose mean embedding is appended (see :func:`predict_expression`; capped in
        sections with ``k`` spots or fewer, recorded in ``params['spatial_context_capped']``).
    context_rep
        ``obsm`` key(s) of context-patch embeddings appended as blocks (see :func:`predict_expression`).
    global_context
        Append the section's mean embedding (see :func:`predict_expression`).
    scale_per_library
        Standardise features within each section (see :func:`predict_expression`); stored, so
        :meth:`Translator.predict` and :meth:`Translator.predict_sdata` scale each new section by its own
        features in the same way.
    stain_reference
        A :class:`squidpy.experimental.im.StainReference` (from ``squidpy.experimental.im.fit_stain_reference``)
        that the training images were normalised to (``squidpy.experimental.im.normalize_stains``) before
        their patches were embedded, or ``None``. Stored (its arrays), so :meth:`Translator.predict_sdata`
        normalises a new section's image to it (tissue mask by ``squidpy.experimental.im.detect_tissue`` when
        the image has none) before cutting patches.
    alphas
        Ridge penalties searched by the inner cross-validation (non-empty, finite, positive).
    {random_state}
        It seeds the PCA and MLP.

    Returns
    -------
    The fitted :class:`Translator`; the data are not modified.

    Raises
    ------
    KeyError
        If ``use_rep``, the gene column, the target layer or a training group is missing.
    ValueError
        Bad ``model``, ``spatial_context``, ``alphas`` or training mask (fewer than 2 spots); NaN in
        ``obs[library_key]``; duplicated ``var_names``; no gene passing the selection; ``X`` not raw counts when the
        target must be computed from it (see :func:`predict_expression`).
    """
    adata = get_adata(data, table_key)
    inputs = read_inputs(adata, use_rep, target, spatial_context, context_rep)
    k_ctx, y = inputs.k_ctx, inputs.y
    plan = make_gene_plan(adata, genes, select_on_train)
    groups = section_groups(adata, library_key)
    check_scaling(scale_per_library, groups, library_key, adata)
    stain = _stain_state(stain_reference)
    m = resolve_train(adata, train, groups, library_key)
    rows = np.flatnonzero(m)
    alphas = check_alphas(alphas)
    validate_random_state(random_state)
    check_global_context(global_context)
    check_model(model)
    caps = context_caps(k_ctx, groups, adata.n_obs)
    gidx = np.flatnonzero(plan.genes_for(adata, rows))
    warn_caps(caps, k_ctx)
    feats, blocks = inputs.features(groups, global_context=bool(global_context), scale=scale_per_library)
    unscaled = (
        inputs.features(groups, global_context=bool(global_context), scale=False)[0] if scale_per_library else feats
    )
    start = logg.info(f"fitting a translator on {len(rows)} spots from `obsm[{use_rep!r}]`")
    est, description = make_model(
        model,
        n_train=len(rows),
        n_features=feats.shape[1],
        inner_groups=None if groups is None else groups[rows],
        alphas=alphas,
        random_state=random_state,
        blocks=blocks,
    )
    with blas_limits(feats):
        est, note = fit_model(
            est,
            feats[rows],
            dense_cols(y, rows, gidx),
            inner_groups=None if groups is None else groups[rows],
            alphas=alphas,
            random_state=random_state,
        )
        description += note
        canonical_arrays(est)  # C-order arrays, as the translator file stores them: same predictions after a save
        domain = ApplicabilityDomain.fit(  # before scale_per_library, which would hide a section-wide shift
            unscaled[rows],
            None if groups is None else groups[rows],
            random_state=random_state,
            before_scaling=bool(scale_per_library),
        )
    patches = adata.uns.get(Key.PATCHES, {})
    tr = Translator(
        est,
        adata.var_names[gidx],
        use_rep=use_rep,
        target=target,
        spatial_context=k_ctx,
        n_features=feats.shape[1],
        patch_params=dict(patches.get("params", {})) if isinstance(patches, dict) else {},
        embed_params=_embedding_params(adata, use_rep),
        blocks=blocks,
        context_embed_params={k: _embedding_params(adata, k) for k in context_keys(context_rep) or []},
        params=records_params(
            genes=genes if isinstance(genes, str) else list(genes),
            gene_selection=plan.selection if plan.fixed is None else None,
            model=model if isinstance(model, str) else repr(model),
            model_description=description,
            library_key=library_key,
            scale_per_library=bool(scale_per_library),
            context_rep=context_keys(context_rep),
            global_context=bool(global_context) or None,
            stain_method=None if stain is None else stain["method"],
            n_train=len(rows),
            alpha=chosen_alpha(est),
            alphas=alphas,
            spatial_context_capped=caps,
            random_state=random_state,
        ),
        applicability=domain,
        stain_reference=stain,
    )
    logg.info(f"    finished: {tr!r}", time=start)
    return tr


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
    return resolve_mask(adata, train)
