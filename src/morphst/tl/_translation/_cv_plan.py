"""The plan of :func:`predict_expression`: every argument validated, the features and the folds built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._features import context_caps, warn_caps
from ._folds import make_folds, patient_folds, resolve_cv, section_groups
from ._genes import make_gene_plan
from ._inputs import Inputs, check_global_context, check_scaling, read_inputs
from ._model import check_alphas, check_model, validate_random_state


@dataclass
class CVPlan:
    """Everything :func:`predict_expression` validated before fitting anything."""

    inputs: Inputs
    genes: Any  # GenePlan
    folds: list  # [(name, train, test, kind), ...]
    main_kind: str  # the kind of fold whose predictions fill the layer
    groups: np.ndarray | None
    feats: np.ndarray
    blocks: list[tuple[str, int]]
    caps: dict
    model: Any
    alphas: list[float]
    random_state: int
    patient_key: str | None
    cv: Any  # resolved from "auto"


def plan_cv(
    adata, use_rep, *, genes, target, model, cv, library_key, patient_key, n_splits, select_on_train,
    spatial_context, context_rep, global_context, scale_per_library, train_key, alphas, random_state,
) -> CVPlan:  # fmt: skip
    """Validate every argument and build the features and folds; raises before anything is written."""
    validate_random_state(random_state)
    inputs = read_inputs(adata, use_rep, target, spatial_context, context_rep)
    gene_plan = make_gene_plan(adata, genes, select_on_train)
    cv = resolve_cv(adata, cv, library_key=library_key, patient_key=patient_key, n_splits=n_splits)
    if patient_key is not None:
        if cv != "leave_one_group_out":
            msg = f"`patient_key` needs cv='leave_one_group_out' (leave one patient / section out), got cv={cv!r}."
            raise ValueError(msg)
        folds = patient_folds(adata, library_key=library_key, patient_key=patient_key)
    else:
        folds = [
            (*f, "all")
            for f in make_folds(
                adata, cv, library_key=library_key, n_splits=n_splits, train_key=train_key,
                random_state=random_state, n_features=inputs.x.shape[1],
            )
        ]  # fmt: skip
    check_model(model)
    alphas = check_alphas(alphas)
    groups = section_groups(adata, library_key)
    check_scaling(scale_per_library, groups, library_key, adata)
    check_global_context(global_context)
    caps = context_caps(inputs.k_ctx, groups, adata.n_obs)
    for _, train, _, _ in folds:  # in-fold gene selections (cached for the fits): a fold without genes fails here
        gene_plan.genes_for(adata, train)
    warn_caps(caps, inputs.k_ctx)
    feats, blocks = inputs.features(groups, global_context=bool(global_context), scale=scale_per_library)
    kinds = [f[3] for f in folds]
    main_kind = "across_patient" if "across_patient" in kinds else kinds[0]
    return CVPlan(
        inputs, gene_plan, folds, main_kind, groups, feats, blocks, caps, model, alphas, random_state, patient_key, cv
    )


__all__ = ["CVPlan", "plan_cv"]
