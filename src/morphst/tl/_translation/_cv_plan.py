"""The plan of :func:`predict_expression`: the recipe's design and the folds, checked before anything is fitted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._folds import make_folds, patient_folds, resolve_cv

if TYPE_CHECKING:
    from anndata import AnnData

    from ._recipe import Design, Recipe


@dataclass
class CVPlan:
    """Everything :func:`predict_expression` checked before fitting anything."""

    design: Design
    folds: list  # [(name, train, test, kind), ...]
    main_kind: str  # the kind of fold whose predictions fill the layer
    patient_key: str | None
    cv: Any  # resolved from "auto"


def plan_cv(adata: AnnData, recipe: Recipe, *, cv, patient_key, n_splits, train_key) -> CVPlan:
    """The design of ``recipe`` on ``adata`` and its folds; raises before anything is written."""
    design = recipe.design(adata)
    lk = recipe.library_key
    cv = resolve_cv(adata, cv, library_key=lk, patient_key=patient_key, n_splits=n_splits)
    if patient_key is not None:
        if cv != "leave_one_group_out":
            msg = f"`patient_key` needs cv='leave_one_group_out' (leave one patient / section out), got cv={cv!r}."
            raise ValueError(msg)
        folds = patient_folds(adata, library_key=lk, patient_key=patient_key)
    else:
        folds = [
            (*f, "all")
            for f in make_folds(
                adata, cv, library_key=lk, n_splits=n_splits, train_key=train_key,
                random_state=recipe.random_state, n_features=design.inputs.x.shape[1],
            )
        ]  # fmt: skip
    for _, train, _, _ in folds:  # in-fold gene selections (cached for the fits): a fold without genes fails here
        design.genes_for(train)
    design.warn_caps()
    kinds = [f[3] for f in folds]
    main_kind = "across_patient" if "across_patient" in kinds else kinds[0]
    return CVPlan(design, folds, main_kind, patient_key, cv)


__all__ = ["CVPlan", "plan_cv"]
