""":func:`learn_features`: morphology features trained towards (translation) or away from (integration) expression."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_copy, doc_data, inject_docs
from ..._utils import check_obsm, get_adata, list_keys, records_params
from .._translation import FeatureHead
from .._translation._features import context_caps, warn_caps
from .._translation._fit import resolve_train
from .._translation._folds import section_groups
from .._translation._genes import dense_cols, make_gene_plan
from .._translation._inputs import check_global_context, context_keys, read_inputs
from ._torch import TrainOptions, resolve_train_device

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

OBJECTIVES = ("translation", "integration")
#: Default width of the learned representation per objective.
DEFAULT_WIDTH = {"translation": 128, "integration": 8}


@inject_docs(data=doc_data, copy=doc_copy)
def learn_features(
    data: AnnData | SpatialData,
    use_rep: str = Key.DEFAULT_REP,
    *,
    objective: Literal["translation", "integration"],
    genes: str | Sequence[str] = Key.MORPH_TARGET,
    target: str = Key.TARGET,
    context_rep: str | Sequence[str] | None = None,
    spatial_context: int | None = 8,
    global_context: bool = True,
    annotation_key: str | None = None,
    expression_rep: str = "X_pca",
    method: Literal["auto", "maf", "multispati", "hsic", "residual"] = "auto",
    penalty_weight: float = 5.0,
    n_components: int | None = None,
    train: str | np.ndarray | Sequence[str] | None = None,
    library_key: str | None = Key.LIBRARY,
    options: TrainOptions | None = None,
    device: str | None = None,
    table_key: str = Key.TABLE,
    random_state: int = 0,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Learn morphology features for translation or for integration from frozen patch embeddings.

    Box 1 of Chelebian, Avenel & Wählby (*Nat. Commun.* 2025): the lever a user controls is how the morphology
    features are trained. ``objective="translation"`` trains a :class:`~morphst.tl.FeatureHead` (TRIPLEX-style
    tokens for the own patch, ``context_rep`` patches, the ``spatial_context`` neighbours and the section; Chung et
    al., CVPR 2024) to predict the target genes with a loss rewarding per-gene correlation, so its last hidden layer
    carries the information shared with expression (quadrant I; eq. 11–12). ``objective="integration"`` calls
    :func:`~morphst.tl.learn_integration_features` (quadrant II; eq. 13–14) with the integration parameters below
    (its ``key_added`` default here: ``"X_learned_integration"``); it documents what it writes.

    Training uses only the spots of ``train`` (and, for translation, genes chosen on them); early stopping holds out
    one of their sections. Every spot is transformed. Features evaluated on the training spots are in-sample: judge
    them (e.g. with :func:`morphst.tl.quadrants`) on spots outside ``train``, or use
    ``predict_expression(model="head")`` for out-of-fold translation figures.

    Parameters
    ----------
    {data}
    use_rep
        ``obsm`` key of the patch embeddings ``(n_obs, n_features)``.
    objective
        ``"translation"`` or ``"integration"``.
    genes
        Translation: the target genes (a ``var`` column re-selected on the training spots, or a list; see
        :func:`morphst.tl.predict_expression`).
    target
        Translation: ``"log1p_cp10k"`` (computed from raw counts if absent), a layer name or ``"X"``.
    context_rep
        Translation: ``obsm`` key(s) of context-patch embeddings (``embed_patches(context_index=k)``).
    spatial_context
        Translation: number of spatial neighbours (same section) whose mean embedding is a token; ``None``: none.
    global_context
        Translation: the section's mean embedding as a token.
    annotation_key
        Integration: ``obs`` column of labels the features must stay relevant to (missing values ignored);
        ``None``: the self-supervised spatial objective.
    expression_rep
        Integration: ``obsm`` key of the expression representation whose information is penalised.
    method
        Integration: ``"auto"``, ``"maf"``, ``"multispati"``, ``"hsic"`` or ``"residual"`` (see
        :func:`~morphst.tl.learn_integration_features`).
    penalty_weight
        Integration: weight of the shared-information penalty (>= 0).
    n_components
        Width of the learned representation; ``None``: 128 for translation (the head's width); integration: see
        :func:`~morphst.tl.learn_integration_features` (the significant components).
    train
        Training spots: ``None`` (all), a boolean ``obs`` column, a boolean array, positions, or ``library_key``
        values.
    library_key
        ``obs`` column of sections (neighbours, section tokens, the early-stopping split).
    options
        Optimiser and stopping rule (:class:`~morphst.tl._learn._torch.TrainOptions`); default its defaults.
    device
        torch device for training; ``None``: ``mst.settings.device``.
    random_state
        Seed of the initialisation, batches, dropout and the inner split (repeatable on the CPU).
    key_added
        ``obsm``/``uns`` key; default ``f"X_learned_{{objective}}"``.
    {copy}

    Returns
    -------
    ``None``, or a copy of the AnnData when ``copy=True``. Sets:

    ``.obsm[key_added]`` : ndarray, shape ``(n_obs, n_components)``, float32
        The learned representation.
    ``.uns[key_added]['curve']`` : DataFrame
        One row per epoch of the early-stopping run (training loss, validation loss, validation PCC).
    ``.uns[key_added]['chosen_epoch']`` : int
        Epochs kept.
    ``.uns[key_added]['params']`` : dict
        The parameters, the genes (translation), the training spots' count and the model description.

    Raises
    ------
    KeyError
        If ``use_rep``, a ``context_rep``, ``expression_rep``, ``annotation_key``, the target or a training group is
        missing.
    ValueError
        An unknown ``objective`` or ``method``, invalid options, NaN features, fewer than 4 training spots. Nothing is
        written then.
    """
    adata = get_adata(data, table_key)
    if objective not in OBJECTIVES:
        msg = f"`objective` must be one of {list(OBJECTIVES)}, got {objective!r}."
        raise ValueError(msg)
    if objective == "integration":
        from ._integration_api import learn_integration_features

        return learn_integration_features(
            adata, use_rep, expression_rep=expression_rep, library_key=library_key, annotation_key=annotation_key,
            method=method, n_components=n_components, penalty_weight=penalty_weight, train=train, options=options,
            device=device, key_added=key_added or "X_learned_integration", random_state=random_state, copy=copy,
        )  # fmt: skip
    opts = (options or TrainOptions()).check()
    n_components = _check_width(n_components if n_components is not None else DEFAULT_WIDTH[objective])
    groups = section_groups(adata, library_key)
    train_mask = resolve_train(adata, train, groups, library_key)
    if train_mask.sum() < 4:
        msg = f"`train` selects {int(train_mask.sum())} spots; at least 4 are needed to learn features."
        raise ValueError(msg)
    key_added = key_added or f"X_learned_{objective}"
    dev = resolve_train_device(device)
    start = logg.info(f"learning {objective} features from `obsm[{use_rep!r}]` on {int(train_mask.sum())} spots")
    z, record, params = _translation(
        adata, use_rep, genes=genes, target=target, context_rep=context_rep, spatial_context=spatial_context,
        global_context=global_context, groups=groups, train_mask=train_mask, n_components=n_components,
        opts=opts, device=device, random_state=random_state,
    )  # fmt: skip
    params = records_params(
        use_rep=use_rep,
        objective=objective,
        n_components=n_components,
        library_key=library_key,
        n_train=int(train_mask.sum()),
        train=None if train is None else (train if isinstance(train, str) else "array"),
        options=opts.record(),
        device=str(dev),
        random_state=random_state,
        **params,
    )
    if copy:
        adata = adata.copy()
    adata.obsm[key_added] = np.asarray(z, dtype=np.float32)
    curve = record.get("curve")
    adata.uns[key_added] = {
        "curve": curve if isinstance(curve, pd.DataFrame) else pd.DataFrame(curve if curve is not None else {}),
        "chosen_epoch": int(record.get("chosen_epoch", 0)),
        "params": params,
    }
    logg.info(
        f"    finished: {record.get('description', '')}; added .obsm[{key_added!r}] {z.shape}, .uns[{key_added!r}]",
        time=start,
    )
    return adata if copy else None


def _check_width(n_components) -> int:
    if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer) or n_components < 1:
        msg = f"`n_components` must be a positive integer, got {n_components!r}."
        raise ValueError(msg)
    return int(n_components)


def _translation(
    adata, use_rep, *, genes, target, context_rep, spatial_context, global_context, groups, train_mask,
    n_components, opts, device, random_state,
):  # fmt: skip
    """Fit a FeatureHead on the training spots; the representation is its fused hidden layer."""
    inputs = read_inputs(adata, use_rep, target, spatial_context, context_rep)
    check_global_context(global_context)
    plan = make_gene_plan(adata, genes, True)
    rows = np.flatnonzero(train_mask)
    gidx = np.flatnonzero(plan.genes_for(adata, rows))
    caps = context_caps(inputs.k_ctx, groups, adata.n_obs)
    warn_caps(caps, inputs.k_ctx)
    feats, blocks = inputs.features(groups, global_context=bool(global_context), scale=False)
    head = FeatureHead(
        blocks=blocks, n_hidden=n_components, random_state=random_state, device=device, **opts.record()
    )  # the TrainOptions fields are FeatureHead parameters of the same names
    head.fit(feats[rows], dense_cols(inputs.y, rows, gidx), groups=None if groups is None else groups[rows])
    curve = pd.DataFrame(head.curve_).set_index("epoch")
    record = {
        "curve": curve,
        "chosen_epoch": head.chosen_epoch_,
        "description": f"{head.describe()}; chosen epoch {head.chosen_epoch_} ({head.validation_})",
    }
    params = {
        "genes": [str(g) for g in adata.var_names[gidx]],
        "target": target,
        "context_rep": context_keys(context_rep),
        "spatial_context": inputs.k_ctx,
        "spatial_context_capped": caps,
        "global_context": bool(global_context),
        "blocks": [list(b) for b in blocks],
        "model_description": record["description"],
    }
    return head.transform(feats), record, params

