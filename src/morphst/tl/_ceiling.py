"""Noise ceiling of translation figures: how well any predictor can correlate with the observed expression.

The counts of each spot are split into two pseudo-replicates by binomial thinning (each count goes to one half with
probability 1/2: two independent Poisson draws of half the depth when the counts are Poisson), each half is
normalised like the translation target, and the per-gene Pearson r between the halves within a section is corrected
to full depth by the Spearman–Brown formula. That is the reliability of the observed values; its square root is the
largest Pearson r that a prediction of the expected expression can reach (Spearman's attenuation bound).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from .. import _logging as logg
from .._constants import Key
from .._docs import doc_copy, doc_data, doc_library_key, doc_random_state, inject_docs
from .._utils import records_params, save_results
from .._utils._checks import raw_counts
from .._utils._counts import counts_inputs, log1p_cp10k
from .._utils._graph import sections
from .._utils._sections import resolve_library_key, section_groups
from .._utils._stats import pearson_columns

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

__all__ = ["noise_ceiling", "spearman_brown"]

#: Default ``key_added`` of :func:`noise_ceiling`.
NOISE_CEILING = "noise_ceiling"


def spearman_brown(r, factor: float = 2.0):
    """Reliability of a measurement ``factor`` times as long, from the reliability ``r`` of one part.

    ``factor * r / (1 + (factor - 1) * r)`` (Spearman 1910; Brown 1910). With ``factor=2`` it turns the Pearson r
    between two halves into the reliability of their sum. NaN where the denominator is not positive. Works on
    floats and arrays alike.
    """
    r = np.asarray(r, dtype=np.float64)
    den = 1.0 + (factor - 1.0) * r
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, factor * r / den, np.nan)
    return float(out) if out.ndim == 0 else out


def _gene_columns(adata: AnnData, genes) -> np.ndarray:
    """Positions of the genes to evaluate: all (``None``), a boolean ``var`` column, or a list of names."""
    if genes is None:
        return np.arange(adata.n_vars)
    if isinstance(genes, str):
        if genes not in adata.var.columns:
            bools = [c for c in adata.var.columns if adata.var[c].dtype == bool]
            msg = (
                f"{genes!r} is not a `var` column. Boolean `var` columns: {bools}; or pass a list of gene names, or "
                "`genes=None` for all genes (`mst.pp.select_genes` writes 'morph_target')."
            )
            raise KeyError(msg)
        col = adata.var[genes]
        if col.dtype != bool:
            msg = f"`var[{genes!r}]` must be boolean (True for the genes to evaluate), got dtype {col.dtype}."
            raise ValueError(msg)
        return np.flatnonzero(col.to_numpy())
    if not isinstance(genes, Sequence | np.ndarray | pd.Index):
        msg = f"`genes` must be None, a boolean `var` column name or a list of gene names, got {type(genes).__name__}."
        raise TypeError(msg)
    names = pd.Index([str(g) for g in genes])
    missing = names[~names.isin(adata.var_names)]
    if len(missing):
        msg = f"{len(missing)} of the genes are not in `var_names`, e.g. {list(missing[:5])}."
        raise KeyError(msg)
    return adata.var_names.get_indexer(names.unique())


def _counts(adata: AnnData, layer: str | None):
    """The raw counts (``X`` or a layer), checked to be non-negative integers."""
    fix = "The noise ceiling thins raw counts: pass `layer=` naming a layer of raw counts (e.g. `layer='counts'`)."
    return raw_counts(adata, layer, empty="the noise ceiling needs raw counts.", fix=fix)[0]


def _thin(x, rng: np.random.Generator):
    """Binomial(1/2) thinning of a counts matrix: the first half (same type as ``x``); the second is ``x - half``."""
    if sparse.issparse(x):
        half = sparse.csr_matrix(x, dtype=np.float64, copy=True)
        half.data = rng.binomial(np.rint(half.data).astype(np.int64), 0.5).astype(np.float64)
        return half, sparse.csr_matrix(x, dtype=np.float64) - half
    x = np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64)
    half = rng.binomial(x, 0.5)
    return half.astype(np.float64), (x - half).astype(np.float64)


def _mean(v: np.ndarray) -> float:
    return float(v.mean()) if v.size else float("nan")


def _dense(y) -> np.ndarray:
    return np.asarray(y.toarray() if sparse.issparse(y) else y, dtype=np.float64)


def _section_reliability(x, cols: np.ndarray, target_sum: float, rng: np.random.Generator) -> np.ndarray:
    """Spearman–Brown reliability per gene of ``cols`` in one section's counts ``x`` (NaN: constant in a half)."""
    a, b = _thin(x, rng)
    if x.shape[0] < 3:
        return np.full(cols.size, np.nan)
    ya = _dense(log1p_cp10k(a, target_sum)[:, cols])
    yb = _dense(log1p_cp10k(b, target_sum)[:, cols])
    return spearman_brown(pearson_columns(ya, yb))


@inject_docs(data=doc_data, library_key=doc_library_key, random_state=doc_random_state, copy=doc_copy)
def noise_ceiling(
    data: AnnData | SpatialData,
    *,
    layer: str | None = None,
    library_key: str | None = Key.LIBRARY,
    genes: str | Sequence[str] | None = None,
    target_sum: float = 1e4,
    random_state: int = 0,
    key_added: str = NOISE_CEILING,
    table_key: str = Key.TABLE,
    copy: bool = False,
) -> AnnData | None:
    """Per section and gene, the highest Pearson r that any prediction of the expression could reach.

    Sequencing noise bounds every translation figure: a spot's counts are one draw around its expected expression,
    so even a perfect predictor of that expectation does not reach r = 1. Following split-half reliability (as for
    neural-response ceilings), the counts of each section are split into two pseudo-replicates by binomial thinning
    with p = 1/2, each half is normalised like the translation target (log1p of counts per ``target_sum``,
    :func:`morphst.pp.normalize`), and the per-gene Pearson r between the halves (within the section) is corrected
    to full depth by Spearman–Brown, ``2r / (1 + r)``: the ``reliability`` ρ, the r that two independent full-depth
    replicates would reach. The ``ceiling`` is √ρ (ρ clipped at 0): the r between the observed values and their
    expectation (Spearman's correction for attenuation), an upper bound on the r of any predictor. Both are
    estimates with the sampling error of a correlation over the section's spots; a gene without signal gets ρ near 0.

    Parameters
    ----------
    {data}
    layer
        Layer of raw counts (non-negative integers); ``None`` uses ``X``.
    {library_key}
        Each section is thinned and correlated on its own spots.
    genes
        Genes to evaluate: ``None`` (all), a boolean ``var`` column (e.g. ``"morph_target"``) or a list of names.
        Library sizes always use all genes, as the target does.
    target_sum
        Counts per spot after normalisation (default 10,000, as the translation target).
    {random_state}
        It seeds the thinning.
    key_added
        Key of the slots written.
    {copy}

    Returns
    -------
    ``None``, or a copy of the AnnData if ``copy=True``. Writes:

    ``.varm[key_added]`` : DataFrame, shape ``(n_vars, n_sections)``
        The ceiling √ρ per gene (rows) and section (columns, the section labels; ``"0"`` for one section); NaN for
        genes not evaluated, constant in a half, or in a section of fewer than 3 spots.
    ``.varm[f'{{key_added}}_reliability']`` : DataFrame, shape ``(n_vars, n_sections)``
        The Spearman–Brown reliability ρ (can be negative by chance).
    ``.uns[key_added]['per_section']`` : DataFrame
        One row per section: ``section``, ``n_spots``, ``n_genes`` (with a value), ``n_excluded``, ``reliability``
        and ``ceiling`` (means over those genes).
    ``.uns[key_added]['params']`` : dict
        ``layer``, ``library_key``, ``genes``, ``n_genes``, ``target_sum``, ``random_state``, ``p`` and the method.

    Raises
    ------
    KeyError
        If ``layer``, ``library_key``, the ``genes`` column or a listed gene is missing.
    ValueError
        If the counts are not non-negative integers (or ``X`` was log-transformed), ``genes`` selects no gene or
        names a non-boolean column, ``obs[library_key]`` has missing values, ``target_sum`` is not positive or
        ``key_added`` is empty. Nothing is written then.
    """
    adata, target_sum = counts_inputs(data, table_key, "mst.tl.noise_ceiling", target_sum, key_added)
    src = _counts(adata, layer)
    cols = _gene_columns(adata, genes)
    if cols.size == 0:
        msg = "`genes` selects no gene; pass at least one (or `genes=None` for all)."
        raise ValueError(msg)
    lib = resolve_library_key(adata, library_key)
    groups = section_groups(adata, lib)
    start = logg.info(f"noise ceiling of {cols.size} genes by binomial thinning, per section")
    rng = np.random.default_rng(random_state)
    src = src.tocsr() if sparse.issparse(src) else np.asarray(src)
    labels, rel, rows = [], [], []
    for lab, idx in sections(groups, adata.n_obs):
        r = _section_reliability(src[idx], cols, target_sum, rng)
        labels.append(lab)
        rel.append(r)
        ok = np.isfinite(r)
        ceil = np.sqrt(np.clip(r[ok], 0.0, None))
        rows.append([lab, int(idx.size), int(ok.sum()), int((~ok).sum()), _mean(r[ok]), _mean(ceil)])
    full = np.full((adata.n_vars, len(labels)), np.nan)
    full[cols] = np.column_stack(rel)
    reliability = pd.DataFrame(full, index=adata.var_names.copy(), columns=labels)
    per_section = pd.DataFrame(rows, columns=["section", "n_spots", "n_genes", "n_excluded", "reliability", "ceiling"])
    record = {
        "per_section": per_section,
        "params": records_params(
            layer=layer,
            library_key=lib,
            genes=genes if genes is None or isinstance(genes, str) else [str(g) for g in genes],
            n_genes=int(cols.size),
            target_sum=float(target_sum),
            random_state=random_state,
            p=0.5,
            method="binomial thinning into two halves, log1p per target_sum, per-gene Pearson r within the section, "
            "Spearman-Brown to full depth (reliability); ceiling = sqrt(reliability)",
        ),
    }
    added = [
        ("varm", key_added, np.sqrt(reliability.clip(lower=0.0))),
        ("varm", f"{key_added}_reliability", reliability),
        ("uns", key_added, record),
    ]
    return save_results(adata, added, copy=copy, start=start)
