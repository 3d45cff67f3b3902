"""Target genes and values: fixed lists or a selection re-run on each training fold (no leakage)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from ..._constants import Key
from ..._utils import bool_column, check_unique_var_names, list_keys
from ..._utils._checks import check_counts
from ..._utils._counts import log1p_cp10k
from ..._utils._genes import check_gene_list
from ..._utils._sdata import did_you_mean
from ...pp import GeneSelection

if TYPE_CHECKING:
    from anndata import AnnData


def target_matrix(adata: AnnData, target: str):
    """Return ``(Y, store)``: the target matrix and whether it must be stored as a new layer."""
    from ..._utils._checks import check_expression

    check_expression(adata, "mst.tl.predict_expression")
    if target == "X":
        if adata.X is None:
            msg = "`adata.X` is empty; choose `target=` naming a layer."
            raise ValueError(msg)
        return adata.X, False
    if target in adata.layers:
        return adata.layers[target], False
    if target == Key.TARGET:
        if adata.X is None:
            msg = "`adata.X` is empty; it must hold raw counts to compute the 'log1p_cp10k' target."
            raise ValueError(msg)
        check_counts(
            adata.X,
            "`adata.X` (raw counts for the 'log1p_cp10k' target)",
            logged="log1p" in adata.uns,
            fix=(
                "Pass `target=` naming a layer of log-normalised expression (`target='X'` if X already holds it), "
                "or run `mst.pp.normalize(adata, layer=<raw counts layer>)` first (it writes `layers['log1p_cp10k']`)."
            ),
        )
        return log1p_cp10k(adata.X), True
    msg = (
        f"Target layer {target!r} not found. Available layers: {list_keys(adata.layers.keys())};"
        f"{did_you_mean(target, adata.layers.keys())} use target={Key.TARGET!r} (computed from raw counts in X) "
        "or target='X'."
    )
    raise KeyError(msg)


@dataclass
class GenePlan:
    """How target genes are chosen in each training fold."""

    fixed: np.ndarray | None  # boolean mask when genes do not change between folds
    selection: GeneSelection | None = None  # the select_genes rule rerun on each training set
    values: Any = None  # statistics matrix of the rule (raw counts or log values)
    _cache: dict = field(default_factory=dict, repr=False)  # selection per training set (validated once, reused)

    def genes_for(self, var_names: pd.Index, train: np.ndarray) -> np.ndarray:
        """Boolean ``(n_vars,)`` mask of the genes of the training rows ``train`` (cached per set of rows)."""
        if self.fixed is not None:
            return self.fixed
        key = np.asarray(train, dtype=np.int64).tobytes()
        if key not in self._cache:
            self._cache[key] = self.selection.select(self.values[train], var_names, "the training spots")[1]
        return self._cache[key]

    def record(self) -> dict | None:
        """``params['gene_selection']``: the rule rerun on each training set, ``None`` for fixed genes."""
        return None if self.selection is None else self.selection.record()


def make_gene_plan(adata: AnnData, genes, select_on_train: bool) -> GenePlan:
    """The target genes of a fit: a fixed mask, or a selection rerun on each training set (:class:`GenePlan`)."""
    check_unique_var_names(adata, "mst.tl.predict_expression / fit_translator")
    if not isinstance(genes, str):
        return GenePlan(fixed=adata.var_names.isin(check_gene_list(adata, genes, "genes")))
    stored = adata.uns[genes].get("params", {}) if isinstance(adata.uns.get(genes), dict) else {}
    # re-select in each fold when the column came from select_genes (its rule is stored), or when the default key is
    # absent altogether (then: the select_genes defaults); a user-made column is used as it is
    reselect = bool(stored) or (genes == Key.MORPH_TARGET and genes not in adata.var.columns)
    if select_on_train and reselect and stored.get("method") != "list":
        rule = GeneSelection.from_params(stored, genes)
        if not stored:  # the select_genes defaults, never chosen by the user: say how to choose, in this call's terms
            _check_default_selection(adata, genes)
        return GenePlan(fixed=None, selection=rule, values=rule.values(adata))
    col = bool_column(
        adata,
        "var",
        genes,
        meaning="target gene",
        missing=f"Gene column {genes!r} not found in `adata.var`. Run `mst.pp.select_genes(adata, "
        f"key_added={genes!r})` first, pass a list of genes, or use `select_on_train=True`. Available columns: "
        f"{list_keys(adata.var.columns)}.",
    )
    if not col.any():
        msg = f"`adata.var[{genes!r}]` selects no gene."
        raise ValueError(msg)
    return GenePlan(fixed=col)


def _check_default_selection(adata: AnnData, genes: str) -> None:
    """``ValueError`` naming what to run when the default gene selection cannot read ``X`` as raw counts.

    The default rule (Pearson residuals, :func:`morphst.pp.select_genes`) reads raw counts in ``X``; its own message
    names ``layer=`` and ``hvg_flavor=``, which :func:`~morphst.tl.predict_expression` does not take.
    """
    fix = (
        f"The target genes `var[{genes!r}]` are not selected yet, so each training fold would choose them with "
        "the defaults of `mst.pp.select_genes` (Pearson residuals of the raw counts in X). Run "
        "`mst.pp.select_genes(adata, layer=<raw counts layer>)` first, or, with log-normalised values only, "
        "`mst.pp.select_genes(adata, hvg_flavor='seurat', layer=<log-normalised layer>)` (its rule is rerun on "
        "each training fold); or pass `genes=[...]`."
    )
    if adata.X is None:
        msg = f"`adata.X` is empty. {fix}"
        raise ValueError(msg)
    check_counts(adata.X, "`adata.X`", logged="log1p" in adata.uns, fix=fix)


def dense_cols(y, rows: np.ndarray, cols: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Dense ``y[rows][:, cols]`` as ``dtype`` (``None``: the dtype of ``y``, no cast)."""
    sub = y[rows][:, cols] if sparse.issparse(y) else np.asarray(y)[np.ix_(rows, cols)]
    sub = sub.toarray() if sparse.issparse(sub) else sub
    return np.asarray(sub, dtype=dtype)


def gene_columns(y, cols: np.ndarray):
    """``y[:, cols]``: the fold's genes only (CSR if ``y`` is sparse), cut once per fold.

    The train and test rows are then cut from it instead of from every gene (at 1,000,000 cells × 300 genes, a
    train-row copy of all genes is 3× the size of one of 100 genes).
    """
    if sparse.issparse(y):
        return sparse.csr_matrix(y[:, cols])
    return np.asarray(y)[:, cols]
