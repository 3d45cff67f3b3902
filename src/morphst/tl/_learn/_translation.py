""":func:`learn_translation_features`: the hidden layer of a translation head trained towards expression."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_copy, doc_data, inject_docs
from ..._utils import get_adata, obs_noun, records_params
from .._nn import FeatureHead, TrainOptions, resolve_train_device
from .._translation import RECIPE, Recipe, fit_rows, recipe_parameters
from ._common import check_width, training_spots, write_learned

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


@recipe_parameters(groups=("inputs", "context"), defaults={"spatial_context": 8, "global_context": True})
@inject_docs(data=doc_data, copy=doc_copy)
def learn_translation_features(
    data: AnnData | SpatialData,
    use_rep=RECIPE,
    *,
    recipe: Recipe,
    n_components: int = 128,
    train: str | np.ndarray | Sequence[str] | None = None,
    library_key=RECIPE,
    options: TrainOptions | None = None,
    device: str | None = None,
    table_key: str = Key.TABLE,
    random_state=RECIPE,
    key_added: str = "X_learned_translation",
    copy: bool = False,
) -> AnnData | None:
    """Learn morphology features that carry what morphology shares with expression (translation objective).

    Box 1 of Chelebian, Avenel & Wählby (*Nat. Commun.* 2025), quadrant I (eq. 11–12): a
    :class:`~morphst.tl.FeatureHead` (one token per input block — own patch, ``context_rep`` patches,
    ``spatial_context`` neighbours, section; TRIPLEX, Chung et al., CVPR 2024) is trained on frozen patch
    embeddings to predict the target genes with a loss rewarding per-gene correlation; its fused hidden layer is the
    learned representation. The recipe and fit step are those of ``predict_expression(regressor="head")``.

    Training uses only the spots of ``train`` and genes chosen on them; early stopping holds out one of their
    sections. Every spot is transformed. Features of the training spots are in-sample: judge them (e.g. with
    :func:`morphst.tl.quadrants`) on spots outside ``train``, or use ``predict_expression(regressor="head")`` for
    out-of-fold figures.

    Parameters
    ----------
    {data}
    n_components
        Width of the learned representation (the head's hidden width).
    train
        Training spots: ``None`` (all), a boolean ``obs`` column, a boolean array, positions, or ``library_key``
        values.
    options
        Optimiser and stopping rule (:class:`~morphst.tl.TrainOptions`); default its defaults.
    device
        torch device for training; ``None``: ``mst.settings.device``.
    random_state
        It seeds the initialisation, batches, dropout and the inner split (repeatable on the CPU).
    key_added
        ``obsm`` / ``uns`` key written.
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
        The recipe, the genes, the training spots' count, the options and the model description.

    Raises
    ------
    KeyError
        If ``use_rep``, a ``context_rep``, the target, ``library_key`` or a training group is missing.
    ValueError
        Invalid options or ``n_components``, NaN features, fewer than 4 training spots. Nothing is written then.
    """
    adata = get_adata(data, table_key)
    opts = (options or TrainOptions()).check()
    n_components = check_width(n_components)
    head = FeatureHead(n_hidden=n_components, ensemble=False, random_state=random_state, device=device, **opts.record())
    recipe = Recipe.check(**(recipe.as_dict() | {"regressor": head}))
    design = recipe.design(adata)
    train_mask = training_spots(adata, train, design.groups, library_key)
    dev = resolve_train_device(device)
    n_train = int(train_mask.sum())
    start = logg.info(f"learning translation features from `obsm[{use_rep!r}]` on {n_train} {obs_noun(adata, n_train)}")
    rows = np.flatnonzero(train_mask)
    gidx = design.genes_for(rows)
    design.warn_caps()
    head, description = fit_rows(design, rows, design.targets(rows, gidx)[0])
    params = records_params(
        use_rep=use_rep, objective="translation", n_components=n_components, library_key=library_key,
        n_train=int(train_mask.sum()), train=None if train is None else (train if isinstance(train, str) else "array"),
        options=opts.record(), device=str(dev), random_state=random_state,
        genes=[str(g) for g in adata.var_names[gidx]], target=recipe.target, context_rep=recipe.record()["context_rep"],
        spatial_context=recipe.spatial_context, spatial_context_capped=design.caps,
        global_context=recipe.global_context, blocks=[list(b) for b in design.blocks], model_description=description,
    )  # fmt: skip
    record = {
        "curve": pd.DataFrame(head.curve_).set_index("epoch"),
        "chosen_epoch": head.chosen_epoch_,
        "description": description,
    }
    z = head.transform(design.x)
    if copy:
        adata = adata.copy()
    write_learned(adata, key_added, z, record, params, start)
    return adata if copy else None
