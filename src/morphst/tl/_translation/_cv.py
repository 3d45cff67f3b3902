"""`predict_expression`: out-of-fold predictions and per-gene metrics under honest cross-validation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_copy, doc_data, inject_docs
from ..._utils import get_adata, records_params
from ..._utils._memory import release_freed_memory
from ..._utils._write import save_results
from ._cv_plan import CVPlan, plan_cv
from ._cv_run import CVResults, run_folds
from ._features import feature_text
from ._folds import CV
from ._recipe import RECIPE, Recipe, recipe_parameters

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


@recipe_parameters()
@inject_docs(data=doc_data, copy=doc_copy)
def predict_expression(
    data: AnnData | SpatialData,
    use_rep=RECIPE,
    *,
    genes=RECIPE,
    target=RECIPE,
    regressor=RECIPE,
    cv: CV | Any = "auto",
    library_key=RECIPE,
    patient_key: str | None = None,
    n_splits: int = 5,
    recipe: Recipe,
    train_key: str = "train",
    alphas=RECIPE,
    table_key: str = Key.TABLE,
    random_state=RECIPE,
    key_added: str = Key.PREDICTED,
    copy: bool = False,
) -> AnnData | None:
    """Predict gene expression from morphology with out-of-fold (cross-validated) predictions.

    Morphology translation (Chelebian, Avenel & Wählby, Nat. Commun. 2025) evaluated as in HEST-Benchmark (Jaume et
    al., NeurIPS 2024) without its leakage: every fitted statistic — gene selection (``select_on_train``),
    scaling, PCA, ridge penalty, early stopping — sees the training fold only. Each fold predicts and is scored on
    its own train-selected genes; the layer holds, for each spot, the genes of the fold that held it out.

    Patients: with ``patient_key`` and ``cv="leave_one_group_out"``, folds *across patients* (leave one patient out)
    and *within patients* (leave one section out among one patient's sections) are run and reported separately
    (``uns[key_added]['summary']``, the ``kind`` column); the layer, the fold column and the ``var`` metrics hold the
    across-patient folds. ``layers[key_added]`` is dense float32 (4 bytes per spot and gene).

    Parameters
    ----------
    {data}
    cv
        ``"auto"``: ``"leave_one_group_out"`` with two or more sections (or with ``patient_key``), else
        ``"spatial_block"`` (logged; ``params['cv']``, ``params['cv_requested']``). ``"leave_one_group_out"``,
        ``"kfold"`` (``n_splits`` shuffled folds), ``"spatial_block"`` (within each section, ``n_splits``
        contiguous strips of equal spot count along its longer axis; fold ``k`` holds out strip ``k`` of every
        section), ``"train_test"`` (train on ``obs[train_key]``), or a scikit-learn splitter (``groups`` = the
        sections; disjoint test sets).
    patient_key
        ``obs`` column of patients (a grouping above sections), with ``cv="leave_one_group_out"`` only.
    n_splits
        Number of folds of ``"kfold"`` and ``"spatial_block"``.
    train_key
        Boolean ``obs`` column of training spots for ``cv="train_test"``.
    random_state
        It seeds the fold shuffling, PCA and MLP.
    key_added
        Prefix of every slot written.
    {copy}

    Returns
    -------
    ``None``, or a copy of the AnnData if ``copy=True``. Writes:

    ``.layers[key_added]`` : ndarray, shape ``(n_obs, n_vars)``, float32
        Out-of-fold predictions on the target scale; NaN where a gene was not predicted for the spot.
    ``.layers['log1p_cp10k']`` : CSR matrix, float32
        The observed target, only when ``target="log1p_cp10k"`` was computed here.
    ``.obs[f'{key_added}_fold']`` : categorical
        The fold that held the spot out; NaN if never held out.
    ``.var[f'{key_added}_mask' | '_pcc' | '_mae' | '_mse' | '_rmse' | '_n_folds']`` : shape ``(n_vars,)``
        Genes predicted in at least one fold; mean of each metric over the folds that predicted the gene (Pearson
        r ignores folds where it is undefined); the number of such folds.
    ``.uns[key_added]['fold_metrics' | 'per_fold' | 'summary']`` : DataFrame
        One row per fold and gene (``pcc``, ``mae``, ``mse``, ``rmse``, ``n_test``, ``constant_in_test``); one per
        fold (``n_train``, ``n_test``, ``n_genes``, mean metrics, ``mse_train_mean``, ``alpha``; with
        ``patient_key`` the ``kind``); one per kind of fold (``n_folds``, ``pcc``, ``pcc_min``, ``pcc_max``).
    ``.uns[key_added]['params']`` : dict
        The recipe, the folds, the gene selection rule and the model description.

    Raises
    ------
    KeyError
        A missing ``use_rep``, ``context_rep``, gene column, target layer, ``library_key`` (see above),
        ``patient_key`` or ``train_key``.
    ValueError
        Bad ``cv``, ``regressor``, ``spatial_context``, ``alphas`` or ``n_splits``; NaN features; fewer than 2
        groups; ``patient_key`` with another ``cv`` or a section of two patients; NaN in ``obs[library_key]``;
        duplicated ``var_names``; a training fold where no gene passes the selection; ``X`` that is not raw counts
        when ``'log1p_cp10k'`` must be computed from it. Nothing is written then.
    """
    adata = get_adata(data, table_key)
    plan = plan_cv(adata, recipe, cv=cv, patient_key=patient_key, n_splits=n_splits, train_key=train_key)
    start = logg.info(f"predicting expression from `obsm[{use_rep!r}]` ({_input_text(plan)}")
    release_freed_memory()  # what earlier steps freed: this step's peak sits on the data alone
    res = run_folds(adata, plan)
    d = plan.design
    params = records_params(
        **recipe.record(),
        gene_selection=d.genes.record(),
        model_description=res.description,
        cv=plan.cv if isinstance(plan.cv, str) else repr(plan.cv),
        cv_requested=cv if isinstance(cv, str) else repr(cv),
        patient_key=patient_key,
        n_splits=int(n_splits),
        spatial_context_capped=d.caps,
        blocks=[list(b) for b in d.blocks] if len(d.blocks) > 1 else None,
        train_key=train_key,
        n_features=int(d.x.shape[1]),
        table_key=table_key,
    )
    params["select_on_train"] = d.genes.fixed is None
    figures = "; ".join(
        ("" if k == "all" else f"{k.replace('_', ' ')}: ")
        + f"mean PCC over folds (each the mean over that fold's genes) {r.pcc:.3f} over {int(r.n_folds)} folds "
        f"(range {r.pcc_min:.3f}–{r.pcc_max:.3f})"
        for k, r in res.summary.iterrows()
    )
    added = _results(adata, plan, res, key_added, params)
    return save_results(adata, added, copy=copy, start=start, summary=figures)


def _input_text(plan: CVPlan) -> str:
    """The model input and folds for the log, e.g. ``"1024 features + section(1024)) in 5 folds (...)"``."""
    d, kinds = plan.design, [f[3] for f in plan.folds]
    scheme = plan.cv if isinstance(plan.cv, str) else type(plan.cv).__name__
    patients = (
        f"; {kinds.count('across_patient')} across / {kinds.count('within_patient')} within patients"
        if plan.patient_key
        else ""
    )
    return (
        f"{feature_text(d.inputs.x.shape[1], d.inputs.k_ctx)}{_extra_text(d.blocks)}) in {len(plan.folds)} folds "
        f"({scheme}{patients})"
    )


def _results(adata: AnnData, plan: CVPlan, res: CVResults, key_added: str, params: dict) -> list:
    """The results as ``(attribute, key, value)``, in the order they are written.

    The target layer when it was computed here, the prediction layer, the fold column, the per-gene ``var`` metrics
    and ``uns[key_added]``.
    """
    added = [("layers", Key.TARGET, plan.design.inputs.y)] if plan.design.inputs.store_target else []
    main_names = [f[0] for f in plan.folds if f[3] == plan.main_kind]
    added += [
        ("layers", key_added, res.pred),
        ("obs", f"{key_added}_fold", pd.Categorical(res.fold_label, categories=main_names)),
    ]
    fm = res.fold_metrics
    fm_main = fm[fm["kind"] == plan.main_kind] if "kind" in fm.columns else fm
    per_gene = fm_main.groupby("gene", observed=True)[["pcc", "mae", "mse", "rmse"]].mean()
    counts = fm_main.groupby("gene", observed=True).size()
    added.append(("var", f"{key_added}_mask", adata.var_names.isin(per_gene.index)))
    for col in ("pcc", "mae", "mse", "rmse"):
        added.append(("var", f"{key_added}_{col}", per_gene[col].reindex(adata.var_names).to_numpy(np.float64)))
    added.append(("var", f"{key_added}_n_folds", counts.reindex(adata.var_names).fillna(0).to_numpy(np.int64)))
    uns = {"fold_metrics": fm, "per_fold": res.per_fold, "summary": res.summary, "params": params}
    return [*added, ("uns", key_added, uns)]


def _extra_text(blocks: list[tuple[str, int]]) -> str:
    """Blocks beyond the own patch and the neighbour mean, e.g. ``" + context:X_ctx(1024) + section(1024)"``."""
    extra = [f"{n}({w})" for n, w in blocks if n not in ("patch", "neighbours")]
    return "".join(f" + {e}" for e in extra)
