"""Selection of the target genes of morphology translation, optionally on training spots only."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from scipy import sparse

from .. import _logging as logg
from .._constants import Key
from .._docs import doc_copy, doc_data, inject_docs
from .._utils import check_unique_var_names, get_adata, list_keys, obs_noun, records_params, save_results
from .._utils._checks import check_counts, check_expression
from .._utils._counts import log1p_cp10k
from .._utils._genes import check_gene_list
from .._utils._sdata import did_you_mean
from .._utils._spots import spot_mask

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

__all__ = ["GeneSelection", "select_genes"]

HVGFlavor = Literal["pearson_residuals", "seurat", "cell_ranger"]


def resolve_mask(adata: AnnData, mask) -> np.ndarray:
    """Turn ``mask`` (None, a boolean obs column name, or a boolean / index array) into a boolean array."""
    return spot_mask(adata, mask, name="mask", purpose="compute gene statistics")


def target_values(adata: AnnData, layer: str | None):
    """Log-normalised values used for gene statistics and as the translation target.

    ``layer`` names a layer that already holds log-normalised values. ``None`` uses ``layers['log1p_cp10k']`` if
    present, else computes log1p of counts per 10,000 from ``X`` (raw counts) without storing it.
    """
    if layer is not None:
        if layer not in adata.layers:
            if layer == Key.TARGET:
                return log1p_cp10k(_counts_or_raise(adata, _LOG_FIX))
            msg = (
                f"Layer {layer!r} not found. Available layers: {list_keys(adata.layers.keys())}."
                f"{did_you_mean(layer, adata.layers.keys())} Use `layer={Key.TARGET!r}` (computed from raw counts "
                "in X) or run `mst.pp.normalize` first."
            )
            raise KeyError(msg)
        return adata.layers[layer]
    if Key.TARGET in adata.layers:
        return adata.layers[Key.TARGET]
    return log1p_cp10k(_counts_or_raise(adata, _LOG_FIX))


_LOG_FIX = (
    "The log1p-cp10k values are computed from raw counts in X: pass `layer=` naming a layer of log-normalised "
    "expression (used as it is; if X holds them, as after `sc.pp.normalize_total` and `sc.pp.log1p`: "
    "`adata.layers['log1p'] = adata.X.copy()`, then `layer='log1p'`), or run "
    "`mst.pp.normalize(adata, layer=<raw counts layer>)` first."
)
_PEARSON_FIX = (
    "Pearson residuals need raw counts: pass `layer=` naming a layer of raw counts, or choose "
    "`hvg_flavor='seurat'` with `layer=` naming a log-normalised layer."
)


def _counts_or_raise(adata: AnnData, fix: str = ""):
    if adata.X is None:
        msg = "`adata.X` is empty; pass `layer=` naming a layer of log-normalised expression."
        raise ValueError(msg)
    check_counts(adata.X, "`adata.X`", logged="log1p" in adata.uns, fix=fix)
    return adata.X


def _dense_or_csr(x):
    """``x`` as float32 CSR or ndarray, copied only when its type or layout differs (callers never modify it)."""
    if sparse.issparse(x):
        return (
            sparse.csr_matrix(x.astype(np.float32, copy=False))
            if x.format != "csr"
            else x.astype(np.float32, copy=False)
        )
    return np.asarray(x, np.float32)


def _detected(values) -> np.ndarray:
    """Spots with a value > 0, per gene (no boolean copy of a sparse matrix)."""
    if sparse.issparse(values):
        return np.bincount(values.indices[values.data > 0], minlength=values.shape[1])
    return np.asarray((values > 0).sum(axis=0)).ravel()


def _without_empty_spots(values):
    """``values`` without its all-zero rows; a ``ValueError`` if no row is left.

    Spots with no counts have Pearson residuals 0/0, which would make every gene's variance NaN. Detection fractions
    still count every spot.
    """
    totals = np.asarray(values.sum(axis=1)).ravel()
    empty = ~(totals > 0)
    if empty.all():
        msg = f"Every one of the {len(totals)} spots has zero total expression: check the expression source (`layer=`)."
        raise ValueError(msg)
    return values[np.flatnonzero(~empty)] if empty.any() else values


def _columns(values, keep: np.ndarray):
    """``values[:, keep]``, without a copy when ``keep`` is every column."""
    return values if keep.size == values.shape[1] else values[:, keep]


def gene_scores(
    values,
    var_names: pd.Index,
    method: Literal["highly_variable", "mean"],
    n_top_genes: int,
    *,
    hvg_flavor: HVGFlavor = "pearson_residuals",
    min_fraction: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and the boolean selection of the ``n_top_genes`` best genes of the spots in ``values``.

    ``values`` holds raw counts for ``hvg_flavor="pearson_residuals"``, log-normalised values otherwise.
    Genes detected (value > 0) in fewer than ``min_fraction`` of the spots get a NaN score and are never selected
    (HEST-Benchmark's 10% filter). The ``n_top_genes`` genes of largest score are taken (ties broken by gene
    order), so exactly ``n_top_genes`` genes are selected when that many have a score. Returns ``(score, selected)``,
    both of length ``n_vars``.
    """
    import anndata as ad
    import scanpy as sc

    values = _dense_or_csr(values)
    n = values.shape[0]
    detected = _detected(values)
    score = np.full(values.shape[1], np.nan)
    hv_values = _without_empty_spots(values) if method == "highly_variable" else values
    if method == "highly_variable" and hvg_flavor == "pearson_residuals":
        # analytic Pearson residuals (Lause, Berens & Kobak, Genome Biol. 2021): residual variance per gene
        keep = np.flatnonzero(detected > 0)
        tmp = ad.AnnData(_columns(hv_values, keep))
        tmp.var_names = var_names[keep]
        df = sc.experimental.pp.highly_variable_genes(
            tmp, flavor="pearson_residuals", n_top_genes=min(n_top_genes, len(keep)), inplace=False
        )
        score[keep] = df["residual_variances"].to_numpy(np.float64)
    elif method == "highly_variable":
        keep = np.flatnonzero(detected > 0)
        tmp = ad.AnnData(_columns(hv_values, keep))
        tmp.var_names = var_names[keep]
        df = sc.pp.highly_variable_genes(tmp, flavor=hvg_flavor, n_top_genes=min(n_top_genes, len(keep)), inplace=False)
        score[keep] = df["dispersions_norm"].to_numpy(np.float64)
    else:
        score = np.asarray(values.mean(axis=0)).ravel().astype(np.float64)
    score[(detected == 0) | (detected < np.ceil(min_fraction * n))] = np.nan
    ok = np.flatnonzero(np.isfinite(score))
    order = ok[np.argsort(-score[ok], kind="stable")]
    selected = np.zeros(len(score), bool)
    selected[order[:n_top_genes]] = True
    return score, selected


def check_selection_params(n_top_genes, min_fraction) -> tuple[int, float]:
    """Validate ``n_top_genes`` (a positive integer) and ``min_fraction`` (in [0, 1]); return them as int and float."""
    if isinstance(n_top_genes, bool) or not isinstance(n_top_genes, int | np.integer) or int(n_top_genes) < 1:
        msg = f"`n_top_genes` must be a positive integer (number of genes to select), got {n_top_genes!r}."
        raise ValueError(msg)
    try:
        f = float(min_fraction)
    except (TypeError, ValueError):
        f = float("nan")
    if not 0.0 <= f <= 1.0:
        msg = (
            f"`min_fraction` must be a fraction of spots in [0, 1] (e.g. 0.1: detected in at least 10% of the "
            f"spots), got {min_fraction!r}."
        )
        raise ValueError(msg)
    return int(n_top_genes), f


def no_gene_error(n_spots: int, min_fraction: float, where: str = "the masked spots") -> ValueError:
    """The error for a selection that keeps no gene (every gene below ``min_fraction`` or undetected)."""
    msg = (
        f"No gene can be selected: none is detected (value > 0) in at least {min_fraction:g} of {where} "
        f"({n_spots} spots). Lower `min_fraction`, or check the spots and the expression source (`layer=`)."
    )
    return ValueError(msg)


def check_flavor(hvg_flavor) -> None:
    """``ValueError`` for an unknown ``hvg_flavor``."""
    if hvg_flavor not in ("pearson_residuals", "seurat", "cell_ranger"):
        msg = f"Unknown `hvg_flavor` {hvg_flavor!r}; use 'pearson_residuals', 'seurat' or 'cell_ranger'."
        raise ValueError(msg)


def statistics_values(adata: AnnData, method: str, hvg_flavor: str, layer: str | None):
    """The matrix that :func:`gene_scores` needs: raw counts for Pearson residuals, log-normalised values else."""
    if method == "highly_variable" and hvg_flavor == "pearson_residuals":
        if layer is None:
            return _counts_or_raise(adata, _PEARSON_FIX)
        if layer not in adata.layers:
            msg = (
                f"Layer {layer!r} not found. Available layers: {list_keys(adata.layers.keys())}."
                f"{did_you_mean(layer, adata.layers.keys())}"
            )
            raise KeyError(msg)
        check_counts(adata.layers[layer], f"`adata.layers[{layer!r}]`", fix=_PEARSON_FIX)
        return adata.layers[layer]
    return target_values(adata, layer)


@dataclass(frozen=True)
class GeneSelection:
    """The rule of :func:`select_genes`, its defaults written once: rerun it on any set of spots.

    :func:`morphst.tl.predict_expression` and :func:`morphst.tl.fit_translator` rerun the rule stored by
    :func:`select_genes` on each training fold (:meth:`from_params`), so no test spot enters the gene choice.

    Attributes
    ----------
    n_top_genes
        Number of genes to select.
    method
        ``"highly_variable"`` or ``"mean"`` (see :func:`select_genes`).
    hvg_flavor
        Score of ``"highly_variable"``: ``"pearson_residuals"``, ``"seurat"`` or ``"cell_ranger"``.
    min_fraction
        Genes detected in fewer than this fraction of the spots are never selected.
    layer
        Source of the statistics (see :func:`select_genes`).
    """

    n_top_genes: int = 50
    method: Literal["highly_variable", "mean"] = "highly_variable"
    hvg_flavor: HVGFlavor = "pearson_residuals"
    min_fraction: float = 0.1
    layer: str | None = None

    def check(self) -> GeneSelection:
        """The same rule with ``n_top_genes`` an int and ``min_fraction`` a float; ``ValueError`` for a bad field."""
        if self.method not in ("highly_variable", "mean"):
            msg = f"Unknown `method` {self.method!r}; use 'highly_variable', 'mean' or a list of gene names."
            raise ValueError(msg)
        n_top, frac = check_selection_params(self.n_top_genes, self.min_fraction)
        check_flavor(self.hvg_flavor)
        return GeneSelection(n_top, self.method, self.hvg_flavor, frac, self.layer)

    @classmethod
    def from_params(cls, params: dict, key: str) -> GeneSelection:
        """The checked rule stored in ``uns[key]['params']`` by :func:`select_genes` (``{}``: the defaults)."""
        rule = cls(**{f.name: params[f.name] for f in fields(cls) if f.name in params})
        try:
            return rule.check()
        except ValueError as e:
            msg = (
                f"The gene selection stored in `adata.uns[{key!r}]['params']` is invalid: {e} Rerun "
                "`mst.pp.select_genes`."
            )
            raise ValueError(msg) from None

    def values(self, adata: AnnData):
        """The statistics matrix of the rule (raw counts for Pearson residuals, else log-normalised), CSR if sparse."""
        v = statistics_values(adata, self.method, self.hvg_flavor, self.layer)
        return v.tocsr() if sparse.issparse(v) else v

    def select(self, values, var_names: pd.Index, where: str = "the masked spots") -> tuple[np.ndarray, np.ndarray]:
        """``(score, selected)`` of :func:`gene_scores` on the spots of ``values``; ``ValueError`` if none is."""
        score, selected = gene_scores(
            values, var_names, self.method, int(self.n_top_genes), hvg_flavor=self.hvg_flavor,
            min_fraction=float(self.min_fraction),
        )  # fmt: skip
        if not selected.any():
            raise no_gene_error(values.shape[0], float(self.min_fraction), where)
        return score, selected

    def record(self) -> dict:
        """The rule as a plain dict (``params['gene_selection']``)."""
        return asdict(self)


@inject_docs(data=doc_data, copy=doc_copy)
def select_genes(
    data: AnnData | SpatialData,
    n_top_genes: int = GeneSelection.n_top_genes,
    *,
    method: Literal["highly_variable", "mean"] | Sequence[str] = GeneSelection.method,
    hvg_flavor: HVGFlavor = GeneSelection.hvg_flavor,
    layer: str | None = GeneSelection.layer,
    mask: str | np.ndarray | None = None,
    min_fraction: float = GeneSelection.min_fraction,
    key_added: str = Key.MORPH_TARGET,
    table_key: str = Key.TABLE,
    copy: bool = False,
) -> AnnData | None:
    """Select the target genes of morphology translation, with statistics on a subset of spots only.

    Follows the gene choice of HEST-Benchmark (Jaume et al., NeurIPS 2024) and ST-Net (He et al., Nat. Biomed.
    Eng. 2020) — the most highly variable (or most expressed) genes, among genes detected in at least 10% of the
    spots — but computes every statistic only on the spots in ``mask`` (the training fold), so that no statistic
    sees a test section (no leakage).

    The default ranks genes by the variance of their analytic Pearson residuals on raw counts (Lause, Berens & Kobak,
    Genome Biol. 2021; :func:`scanpy.experimental.pp.highly_variable_genes`), which accounts for sequencing depth. On
    HER2ST the dispersion-based ``"seurat"`` ranking at ``n_top_genes=50`` picks low-count genes whose dispersion comes
    from a few shallow spots (e.g. GGPS1, PFKP, POLL), while Pearson residuals pick the tissue-structure genes
    (immunoglobulins, collagens, SCGB2A2, CEACAM6, HLA class II, ...).

    Parameters
    ----------
    {data}
    n_top_genes
        Number of genes to select (ignored when ``method`` is a list of genes).
    method
        ``"highly_variable"``: the ``n_top_genes`` genes of largest ``hvg_flavor`` score on the masked spots.
        ``"mean"``: the ``n_top_genes`` genes of largest mean log-normalised expression. A list of gene names:
        exactly those genes.
    hvg_flavor
        Score for ``method="highly_variable"`` (scanpy's ``flavor``): ``"pearson_residuals"`` (residual variance, on
        raw counts), ``"seurat"`` or ``"cell_ranger"`` (normalised dispersion of
        :func:`scanpy.pp.highly_variable_genes`, on log-normalised values).
    layer
        Source of the statistics. For ``"pearson_residuals"``: a layer of raw counts (``None``: ``X``). Otherwise:
        a layer of log-normalised expression (``None``: ``layers['log1p_cp10k']`` if present, else log1p of counts
        per 10,000 computed from the raw counts in ``X``, see :func:`morphst.pp.normalize`, not stored).
    mask
        Spots whose values enter the statistics: a boolean ``obs`` column name, a boolean array of length
        ``n_obs`` or an array of integer positions. ``None``: all spots.
    min_fraction
        Genes detected (value > 0) in fewer than this fraction of the masked spots are never selected (HEST-Benchmark
        uses 0.1). Ignored for a list.
    key_added
        Name of the ``var`` column written.
    {copy}

    Returns
    -------
    ``None``, or a copy of the AnnData if ``copy=True``. Writes:

    ``.var[key_added]`` : bool, shape ``(n_vars,)``
        The selected genes.
    ``.var[f'{key_added}_score']`` : float, shape ``(n_vars,)``
        The ranking score on the masked spots (residual variance, normalised dispersion or mean); NaN for genes
        below ``min_fraction`` and for a list.
    ``.uns[key_added]['params']`` : dict
        ``n_top_genes``, ``method`` (``"list"`` for a list), ``genes`` (for a list),
        ``hvg_flavor``, ``layer``, ``min_fraction``, ``n_spots`` (spots in the mask), ``n_selected`` (genes
        selected: fewer than ``n_top_genes`` when fewer pass ``min_fraction``, with a warning).

    Raises
    ------
    KeyError
        If ``layer``, a mask column or a listed gene does not exist.
    ValueError
        If ``var_names`` has duplicates, ``n_top_genes`` is not a positive integer, ``min_fraction`` is outside
        [0, 1], ``method`` or ``hvg_flavor`` is unknown, the list of genes is empty, the mask selects fewer than 2 spots,
        no gene passes ``min_fraction``, or the source is not what the score needs (raw counts for Pearson
        residuals and for log1p-cp10k computed from ``X``). Nothing is written then.
    """
    adata = get_adata(data, table_key)
    check_expression(adata, "mst.pp.select_genes")
    check_unique_var_names(adata, "mst.pp.select_genes")
    m = resolve_mask(adata, mask)
    is_list = not isinstance(method, str)
    if is_list:
        genes = check_gene_list(adata, method, "method")
        check_flavor(hvg_flavor)
    else:
        rule = GeneSelection(n_top_genes, method, hvg_flavor, min_fraction, layer).check()
        n_top_genes, min_fraction = rule.n_top_genes, rule.min_fraction
    values = None if is_list else rule.values(adata)
    if copy:
        adata = adata.copy()

    what = "list" if is_list else (f"{method}, {hvg_flavor}" if method == "highly_variable" else method)
    n_spots, noun = int(m.sum()), obs_noun(adata, int(m.sum()))
    start = logg.info(f"selecting {'listed' if is_list else n_top_genes} genes ({what}) on {n_spots} {noun}")
    if is_list:
        selected = adata.var_names.isin(genes)
        score = np.full(adata.n_vars, np.nan)
    else:
        # no copy of every row
        score, selected = rule.select(values if m.all() else values[np.flatnonzero(m)], adata.var_names)
        if selected.sum() < n_top_genes:
            msg = (
                f"only {int(selected.sum())} of the {n_top_genes} genes asked for are detected in at least "
                f"{min_fraction:g} of the {n_spots} {noun}; selected those (lower `min_fraction` for more)"
            )
            warnings.warn(msg, UserWarning, stacklevel=2)
    record = {
        "params": records_params(
            n_top_genes=int(selected.sum()) if is_list else int(n_top_genes),
            method="list" if is_list else method,
            genes=list(adata.var_names[selected]) if is_list else None,
            hvg_flavor=hvg_flavor,
            layer=layer,
            min_fraction=float(min_fraction),
            n_spots=n_spots,
            n_selected=int(selected.sum()),
        )
    }
    added = [("var", key_added, selected), ("var", f"{key_added}_score", score), ("uns", key_added, record)]
    save_results(adata, added, start=start, summary=f"selected {int(selected.sum())} genes")
    return adata if copy else None
