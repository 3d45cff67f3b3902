"""`predict_expression`: out-of-fold predictions and per-gene metrics under honest cross-validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_copy, doc_data, doc_library_key, doc_random_state, inject_docs
from ..._utils import get_adata, records_params
from ...pp._normalize import LOG1P_CP10K
from ._cv_plan import CVPlan, plan_cv
from ._cv_run import CVResults, run_folds
from ._features import feature_text
from ._folds import CV
from ._inputs import context_keys
from ._model import DEFAULT_ALPHAS

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


@inject_docs(data=doc_data, library_key=doc_library_key, random_state=doc_random_state, copy=doc_copy)
def predict_expression(
    data: AnnData | SpatialData,
    use_rep: str = Key.DEFAULT_REP,
    *,
    genes: str | Sequence[str] = Key.MORPH_TARGET,
    target: str = Key.TARGET,
    model: Literal["ridge", "mlp", "head"] | Any = "ridge",
    cv: CV | Any = "auto",
    library_key: str | None = Key.LIBRARY,
    patient_key: str | None = None,
    n_splits: int = 5,
    select_on_train: bool = True,
    spatial_context: int | None = None,
    context_rep: str | Sequence[str] | None = None,
    global_context: bool = False,
    scale_per_library: bool = False,
    train_key: str = "train",
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    table_key: str = Key.TABLE,
    random_state: int = 0,
    key_added: str = Key.PREDICTED,
    copy: bool = False,
) -> AnnData | None:
    """Predict gene expression from morphology with out-of-fold (cross-validated) predictions.

    Morphology translation (Chelebian, Avenel & Wählby, Nat. Commun. 2025) evaluated as in HEST-Benchmark (Jaume et
    al., NeurIPS 2024), but without its leakage: in each fold the target genes are re-selected on the training spots
    (``select_on_train=True``), and every fitted statistic — scaling, PCA, ridge penalty — sees the training fold
    only. The default model is the HEST linear probe: features standardised on the training fold, PCA to at most
    256 components fit on the training fold, ridge regression (:class:`~sklearn.linear_model.RidgeCV`) with the
    penalty chosen by inner cross-validation on the training fold, grouped by ``library_key`` (leave-sections-out
    within the training fold, :class:`~sklearn.model_selection.GroupKFold`, R² averaged over genes) when the
    training fold holds at least two groups, else efficient leave-one-out.

    Gene semantics. With ``genes`` naming a ``var`` column written by :func:`morphst.pp.select_genes` (or the
    default ``"morph_target"`` not yet computed) and ``select_on_train=True``, selection is rerun on each training
    fold with the parameters stored in ``uns[genes]['params']`` (default: 50 highly variable genes by Pearson
    residuals); a boolean column made by other means is used as it is. Each fold predicts and is
    evaluated on its own train-selected genes only. The layer holds, for each spot, the genes of the fold that held
    it out (NaN elsewhere); ``var[f'{key_added}_mask']`` is the union over folds, and the per-gene metrics in
    ``var`` average over the folds that selected the gene. With ``select_on_train=False`` (or a list of genes) the
    same genes are used in every fold; selecting them on all spots beforehand is the leaky HEST variant.

    Patients. With ``patient_key`` (an ``obs`` column grouping sections by patient) and
    ``cv="leave_one_group_out"``, two kinds of folds are run: *across patients* (leave one patient out: train on
    all sections of the other patients, predict this patient's) and *within patients* (for each patient with two
    or more sections, leave one section out, training on the other sections of that patient only). Serial
    sections of one tumour share staining, scanner and biology, so within-patient figures are optimistic for a
    new patient; the two are reported separately (``uns[key_added]['summary']`` and the ``kind`` column of the
    fold tables). The layer, ``obs[f'{key_added}_fold']`` and the per-gene ``var`` metrics hold the
    across-patient folds (within-patient folds when there is one patient only, with a warning).

    Memory: ``layers[key_added]`` is a dense ``n_obs × n_vars`` float32 array (NaN where not predicted), 4 bytes per
    spot and gene whatever the number of genes predicted; for very large tables, subset the AnnData to the genes of
    interest first.

    Parameters
    ----------
    {data}
    use_rep
        ``obsm`` key of the morphological features, ``(n_obs, n_features)``.
    genes
        Target genes: a boolean ``var`` column (see above) or a list of gene names.
    target
        What to predict: ``"log1p_cp10k"`` (log1p of counts per 10,000; the layer if present, else computed from
        the raw counts in ``X`` and stored), a layer name, or ``"X"``.
    model
        ``"ridge"`` (default, see above), ``"mlp"`` (same scaler and PCA, then an MLP with one hidden layer of 256
        units and early stopping on standardised targets), ``"head"`` (:class:`~morphst.tl.FeatureHead`: a
        trained head with one token per input block — own patch, ``context_rep``, ``spatial_context`` neighbours,
        ``global_context`` — a loss rewarding per-gene correlation, early stopping on a held-out section of the
        training fold; pass a ``FeatureHead(...)`` to set its options), or any scikit-learn regressor, cloned per
        fold and used as given (wrap it in a :class:`~sklearn.pipeline.Pipeline` for preprocessing).
    cv
        ``"auto"`` (default): ``"leave_one_group_out"`` when ``obs[library_key]`` holds two or more sections (or
        with ``patient_key``), ``"spatial_block"`` when there is one section (``library_key`` absent or a single
        value; logged, and recorded in ``params['cv']`` with ``params['cv_requested']``).
        ``"leave_one_group_out"`` (one fold per value of ``library_key``), ``"kfold"`` (``n_splits`` shuffled folds),
        ``"spatial_block"`` (within each group, ``n_splits`` contiguous strips of equal spot count along the longer
        axis of ``obsm['spatial']``; fold ``k`` holds out strip ``k`` of every group, so neighbours rarely straddle
        train and test), ``"train_test"`` (train on ``obs[train_key] == True``, predict the rest), or a
        scikit-learn splitter (its ``split`` gets ``groups=obs[library_key]``; test sets must be disjoint).
    {library_key}
        Its sections are the groups of ``"leave_one_group_out"`` and of the inner cross-validation, and the units
        within which spatial neighbours are searched and features scaled.
    patient_key
        ``obs`` column of patients (a grouping above sections): adds leave-one-patient-out folds and reports
        across- and within-patient figures separately (see Patients above). Only with
        ``cv="leave_one_group_out"``. ``None``: sections only.
    n_splits
        Number of folds of ``"kfold"`` and ``"spatial_block"``.
    select_on_train
        Re-select the target genes on each training fold (no test statistic enters the gene choice).
    spatial_context
        Number ``k`` of spatial neighbours (in ``obsm['spatial']``, within the same ``library_key`` section, sparse kNN)
        whose mean embedding is concatenated to each spot's own (SEPAL / TRIPLEX idea: Pineda et al. 2023, Chung
        et al. 2024). ``None``: own embedding only. On the legacy ST grid, 4 are the adjacent spots (200 µm away).
        A section with ``k`` spots or fewer uses all its other spots (a warning names them; recorded in
        ``params['spatial_context_capped']`` as ``{section: neighbours used}``); ``k`` at least the size of the
        largest section is an error.
    scale_per_library
        Standardise every feature within each section (mean 0, standard deviation 1 over that section's spots,
        after the spatial context) before the model: removes section-wide shifts of the embedding (stain, scanner,
        thickness), at the cost of section-wide differences in expression that morphology could have explained.
        Uses only the features of a section, never its expression, so a new section is scaled by itself in the
        same way (:func:`fit_translator` stores it). Off by default (the README gives the measured effect).
    context_rep
        ``obsm`` key(s) of embeddings of larger fields of view around the same spots
        (``mst.pp.extract_patches(context_sizes_um=...)`` then ``mst.tl.embed_patches(..., context_index=k)``),
        appended as blocks after the own embedding (multi-scale context, as TRIPLEX: Chung et al., CVPR 2024).
    global_context
        Append the mean embedding of the spot's ``library_key`` section (a section-level token, computed on the
        section's own features, train or test alike).
    train_key
        Boolean ``obs`` column of training spots for ``cv="train_test"``.
    alphas
        Ridge penalties searched by the inner cross-validation (non-empty, finite, positive).
    {random_state}
        It seeds the fold shuffling, PCA and MLP.
    key_added
        Prefix of every slot written.
    {copy}

    Returns
    -------
    ``None``, or a copy of the AnnData if ``copy=True``. Writes:

    ``.layers[key_added]`` : ndarray, shape ``(n_obs, n_vars)``, float32
        Out-of-fold predictions on the target scale; NaN for genes not predicted for that spot (and for spots in no
        test set, e.g. training spots of ``"train_test"``).
    ``.layers['log1p_cp10k']`` : CSR matrix, shape ``(n_obs, n_vars)``, float32
        The observed target, only when ``target="log1p_cp10k"`` was computed here.
    ``.obs[f'{key_added}_fold']`` : categorical
        The fold that held the spot out (for ``"leave_one_group_out"`` the group's name); NaN if never held out.
    ``.var[f'{key_added}_mask']`` : bool, shape ``(n_vars,)``
        Genes predicted in at least one fold.
    ``.var[f'{key_added}_pcc' | '_mae' | '_mse' | '_rmse']`` : float, shape ``(n_vars,)``
        Mean of the metric over the folds that predicted the gene (Pearson r ignores folds where it is undefined);
        NaN for genes not predicted.
    ``.var[f'{key_added}_n_folds']`` : int, shape ``(n_vars,)``
        Number of folds that predicted the gene.
    ``.uns[key_added]['fold_metrics']`` : DataFrame
        One row per fold and gene: ``fold``, ``gene``, ``pcc``, ``mae``, ``mse``, ``rmse``, ``n_test``,
        ``constant_in_test``.
    ``.uns[key_added]['per_fold']`` : DataFrame
        One row per fold: ``fold``, (with ``patient_key``: ``kind``, ``"across_patient"`` or
        ``"within_patient"``; also in ``fold_metrics``), ``n_train``, ``n_test``, ``n_genes``, ``pcc`` (mean over genes with a defined
        r), ``mae``, ``mse``, ``rmse``, ``n_excluded`` (genes without r), ``n_constant_in_test``, ``mse_train_mean``
        (MSE of the training-mean predictor), ``alpha`` (ridge penalty chosen; NaN for other models).
    ``.uns[key_added]['summary']`` : DataFrame
        One row per kind of fold (``"all"``; with ``patient_key``, ``"across_patient"`` and ``"within_patient"``):
        ``n_folds``, ``pcc`` (mean over folds), ``pcc_min``, ``pcc_max``, ``mse``, ``mse_train_mean``.
    ``.uns[key_added]['params']`` : dict
        Everything needed to rerun it, the ``target`` used and the model description.

    Raises
    ------
    KeyError
        If ``use_rep``, a ``context_rep``, the gene column, the target layer, ``library_key`` (for group folds,
        ``scale_per_library``),
        ``patient_key`` or ``train_key`` is missing.
    ValueError
        Bad ``cv``, ``model``, ``spatial_context`` (not a positive integer, or not smaller than the largest
        section), ``alphas`` (empty, non-positive) or ``n_splits``; features with NaN; fewer than 2 groups;
        ``patient_key`` with another ``cv``, or a section of two patients; missing (NaN) values in
        ``obs[library_key]``; duplicated ``var_names``; a training fold where no gene passes the
        selection's ``min_fraction``; ``X`` that is not raw counts when the ``'log1p_cp10k'`` target must be
        computed from it (non-integer, negative, or ``uns['log1p']`` set: pass ``target=`` naming the
        log-normalised layer). Nothing is written then.
    """
    adata = get_adata(data, table_key)
    plan = plan_cv(
        adata, use_rep, genes=genes, target=target, model=model, cv=cv, library_key=library_key,
        patient_key=patient_key, n_splits=n_splits, select_on_train=select_on_train,
        spatial_context=spatial_context, context_rep=context_rep, global_context=global_context,
        scale_per_library=scale_per_library, train_key=train_key, alphas=alphas, random_state=random_state,
    )  # fmt: skip
    kinds = [f[3] for f in plan.folds]
    start = logg.info(
        f"predicting expression from `obsm[{use_rep!r}]` ({feature_text(plan.inputs.x.shape[1], plan.inputs.k_ctx)}"
        f"{_extra_text(plan.blocks)}) in {len(plan.folds)} folds "
        f"({plan.cv if isinstance(plan.cv, str) else type(plan.cv).__name__}"
        + (
            f"; {kinds.count('across_patient')} across / {kinds.count('within_patient')} within patients)"
            if patient_key
            else ")"
        )
    )
    res = run_folds(adata, plan)
    params = records_params(
        use_rep=use_rep,
        genes=genes if isinstance(genes, str) else list(genes),
        gene_selection=plan.genes.selection if plan.genes.fixed is None else None,
        target=target,
        model=model if isinstance(model, str) else repr(model),
        model_description=res.description,
        cv=plan.cv if isinstance(plan.cv, str) else repr(plan.cv),
        cv_requested=cv if isinstance(cv, str) else repr(cv),
        library_key=library_key,
        patient_key=patient_key,
        n_splits=int(n_splits),
        select_on_train=plan.genes.fixed is None,
        spatial_context=plan.inputs.k_ctx,
        spatial_context_capped=plan.caps,
        context_rep=context_keys(context_rep),
        global_context=bool(global_context) or None,
        blocks=[list(b) for b in plan.blocks] if len(plan.blocks) > 1 else None,
        scale_per_library=bool(scale_per_library),
        train_key=train_key,
        alphas=plan.alphas,
        n_features=int(plan.feats.shape[1]),
        random_state=random_state,
        table_key=table_key,
    )
    if copy:
        adata = adata.copy()
    _write(adata, plan, res, key_added, params)
    figures = "; ".join(
        ("" if k == "all" else f"{k.replace('_', ' ')}: ")
        + f"mean PCC over folds (each the mean over that fold's genes) {r.pcc:.3f} over {int(r.n_folds)} folds "
        f"(range {r.pcc_min:.3f}–{r.pcc_max:.3f})"
        for k, r in res.summary.iterrows()
    )
    logg.info(
        f"    finished: {figures}; added `.layers[{key_added!r}]`, "
        f"`.obs['{key_added}_fold']`, `.var['{key_added}_mask' | '_pcc' | '_mae' | '_mse' | '_rmse']`, "
        f"`.uns[{key_added!r}]`",
        time=start,
    )
    return adata if copy else None


def _write(adata: AnnData, plan: CVPlan, res: CVResults, key_added: str, params: dict) -> None:
    """Write the layer, the fold column, the per-gene ``var`` metrics and ``uns[key_added]``."""
    if plan.inputs.store_target:
        adata.layers[LOG1P_CP10K] = plan.inputs.y
    adata.layers[key_added] = res.pred
    main_names = [f[0] for f in plan.folds if f[3] == plan.main_kind]
    adata.obs[f"{key_added}_fold"] = pd.Categorical(res.fold_label, categories=main_names)
    fm = res.fold_metrics
    fm_main = fm[fm["kind"] == plan.main_kind] if "kind" in fm.columns else fm
    per_gene = fm_main.groupby("gene", observed=True)[["pcc", "mae", "mse", "rmse"]].mean()
    counts = fm_main.groupby("gene", observed=True).size()
    adata.var[f"{key_added}_mask"] = adata.var_names.isin(per_gene.index)
    for col in ("pcc", "mae", "mse", "rmse"):
        adata.var[f"{key_added}_{col}"] = per_gene[col].reindex(adata.var_names).to_numpy(np.float64)
    adata.var[f"{key_added}_n_folds"] = counts.reindex(adata.var_names).fillna(0).to_numpy(np.int64)
    adata.uns[key_added] = {
        "fold_metrics": fm,
        "per_fold": res.per_fold,
        "summary": res.summary,
        "params": params,
    }


def _extra_text(blocks: list[tuple[str, int]]) -> str:
    """Blocks beyond the own patch and the neighbour mean, e.g. ``" + context:X_ctx(1024) + section(1024)"``."""
    extra = [f"{n}({w})" for n, w in blocks if n not in ("patch", "neighbours")]
    return "".join(f" + {e}" for e in extra)
