""":func:`gene_quadrants`: predictability from morphology (x) against relevance to the annotation (y), per gene."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._docs import doc_copy, doc_data, inject_docs
from ..._utils import check_obs_column, check_unique_var_names, get_adata, list_keys, records_params
from ..._utils._hints import run_first
from ..._utils._memory import release_freed_memory
from ..._utils._stats import CONST_RTOL
from . import _common as c

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def _moments(x: np.ndarray, block: int):
    """Column mean, root of the sum of squared deviations and constancy of ``x``, in row blocks.

    Each block is read as float64, so there is no full-size float64 copy. Constant: the criterion of
    :func:`~morphst._utils._stats.is_constant` for finite values.
    """
    n, k = x.shape

    def blocks():
        for s in range(0, n, block):
            yield x[s : s + block].astype(np.float64)

    total, scale = np.zeros(k), np.zeros(k)
    for b in blocks():
        total += b.sum(axis=0)
        scale = np.maximum(scale, np.abs(b).max(axis=0, initial=0.0))
    mean = total / max(n, 1)
    ssd = np.zeros(k)
    for b in blocks():
        b -= mean
        ssd += np.einsum("ij,ij->j", b, b)
    const = (np.sqrt(ssd / max(n, 1)) <= CONST_RTOL * np.maximum(scale, 1e-300)) | (n < 2)
    return mean, np.sqrt(ssd), const


def _pcc_null(
    pred, observed, groups: list[np.ndarray], n_genes: int, gene_idx=None, observed_idx=None, block: int = 65_536
):
    """The predictability null: ``(record, finish)``; ``record(rng)`` per draw, then ``finish()`` gives the draws.

    Per group (fold): the Pearson r of the predictions with the observed values of shuffled spots of that group
    (genes predicted in it), averaged over groups as the per-gene PCC is. ``record(rng)`` takes one draw's
    shuffles from ``rng`` (the generator is left where computing the draw would leave it; returns ``None``);
    ``finish()`` returns the list of draws (one array of ``n_genes`` per recorded draw, in order), computed one
    group at a time: only one group's values are held (its observed values and its predictions standardised once,
    float32, ``n_group × genes``). A shuffle moves the observed values but not their mean or spread, so a draw is
    one pass over the shuffled rows in blocks of ``block`` rows (float64 sums): equal to
    :func:`~morphst._utils._stats.pearson_columns` of the shuffled values to ~1e-7, with no per-draw copy of the
    group. Means, norms and the constant-column check are computed in row blocks (no float64 copy of a group).
    ``pred`` / ``observed``: the predictions and the observed values of the ``n_genes`` genes, or whole layers
    (dense or sparse) with ``gene_idx`` / ``observed_idx`` their columns of those genes.
    """
    gene_idx = np.arange(n_genes) if gene_idx is None else np.asarray(gene_idx)
    observed_idx = np.arange(n_genes) if observed_idx is None else np.asarray(observed_idx)
    groups = [np.asarray(idx) for idx in groups if len(idx) >= 3]
    states: list[list[tuple]] = []  # per draw: (bit generator type, its state) before each group's shuffle

    def record(rng):
        if groups:
            states.append([])
            for idx in groups:
                states[-1].append((type(rng.bit_generator), rng.bit_generator.state))
                rng.permutation(idx.size)  # the shuffle of this group, drawn again by finish()
        return None

    def finish() -> list[np.ndarray]:
        draws = [[] for _ in states]
        for g, idx in enumerate(groups):
            p = c.read_block(pred, idx, gene_idx)
            cols = np.flatnonzero(np.isfinite(p).all(axis=0))  # genes predicted for this group (fold)
            p = p[:, cols] if cols.size < p.shape[1] else p
            e = c.read_block(observed, idx, observed_idx[cols])  # the group's observed values, rows in ``idx`` order
            e_mean, e_norm, e_const = _moments(e, block)
            p_mean, p_norm, p_const = _moments(p, block)
            const = p_const | e_const
            # standardised predictions, centred and scaled in float64 per block; written over ``p`` when it is float32
            # (read_block always returns a copy of its own): one group-sized array less
            zp = p if p.dtype == np.float32 else np.empty(p.shape, np.float32)
            with np.errstate(invalid="ignore", divide="ignore"):
                for s in range(0, len(p), block):
                    zp[s : s + block] = np.nan_to_num((p[s : s + block].astype(np.float64) - p_mean) / p_norm)
            del p
            sum_zp = zp.sum(axis=0, dtype=np.float64)
            for d, st in enumerate(states):
                bitgen_type, state = st[g]
                bitgen = bitgen_type()
                bitgen.state = state
                src = np.random.Generator(bitgen).permutation(idx.size)  # the recorded shuffle, as local rows
                dot = np.zeros(cols.size)
                for s in range(0, src.size, block):
                    eb = e[src[s : s + block]].astype(np.float64)
                    dot += np.einsum("ij,ij->j", eb, zp[s : s + block].astype(np.float64))
                with np.errstate(invalid="ignore", divide="ignore"):
                    r = np.clip((dot - e_mean * sum_zp) / e_norm, -1.0, 1.0)
                r[const] = np.nan
                r_g = np.full(n_genes, np.nan)
                r_g[cols] = r
                draws[d].append(r_g)
            del zp, e
        return [np.nanmean(np.vstack(rs), axis=0) for rs in draws]

    return record, finish


@inject_docs(data=doc_data, copy=doc_copy)
def gene_quadrants(
    data: SpatialData | AnnData,
    *,
    predicted_key: str = Key.PREDICTED,
    annotation_key: str = Key.ANNOTATION,
    layer: str | None = None,
    thresholds: Literal["permutation", "median"] | tuple[float, float] = "permutation",
    library_key: str | None = None,
    n_perms: int = 100,
    quantile: float = 0.95,
    n_neighs: int = 3,
    max_obs: int | None = c.MAX_OBS,
    table_key: str = Key.TABLE,
    random_state: int = 0,
    key_added: str = Key.GENE_QUADRANTS,
    copy: bool = False,
) -> AnnData | None:
    """The gene-level reading of the quadrant framework: predictability from morphology against relevance.

    After Box 1/2 of Chelebian, Avenel & Wählby, *Nat. Commun.* 2025. For every gene predicted by
    :func:`morphst.tl.predict_expression` (``var[f'{predicted_key}_pcc']`` not NaN): the x axis is how well it is
    predicted from morphology (mean per-section Pearson r), the y axis how relevant the gene is to the annotation
    (mutual information of its expression with the labels, scikit-learn's ``mutual_info_classif`` estimator, seeded).
    Genes that are well predicted but not relevant fall in ``"overestimation"`` (e.g. housekeeping genes whose high
    score says nothing about the task). Spots with a missing annotation are left out of the relevance axis. Beyond
    ``max_obs`` annotated observations, relevance and its null are estimated on a seeded subsample, with a stability
    check on a second one, as in :func:`morphst.tl.quadrants`; the predictability null uses every observation
    (its run time at cell scale: ``benchmarks/cell_scale.py``).

    Parameters
    ----------
    {data}
    predicted_key
        Key of :func:`morphst.tl.predict_expression`: reads ``var[f'{predicted_key}_pcc']`` and, for the
        permutation null, ``layers[predicted_key]``.
    annotation_key
        ``obs`` column with the labels (at least 2 categories).
    layer
        Observed expression, log-normalised like the prediction target: used for the relevance axis and for the
        permutation null of the PCC. ``None``: the layer named by ``uns[predicted_key]['params']['target']`` when it
        exists (e.g. ``'log1p_cp10k'``), else ``X``.
    thresholds
        ``"permutation"``: relevance threshold = ``quantile`` of the MI of the genes with shuffled labels (pooled
        over genes × ``n_perms``); predictability threshold = ``quantile`` of the PCC between
        ``layers[predicted_key]`` and the observed values with spots shuffled within each ``library_key`` group,
        averaged over groups as the per-gene PCC is (pooled over genes × ``n_perms``). ``"median"``: medians over
        genes. ``(x, y)``: fixed PCC (x, in ``[-1, 1)``) and MI (y, nats, in ``[0, ln(n_categories))``) thresholds.
    library_key
        ``obs`` column of the cross-validation folds for the PCC null (within each fold, only the genes predicted in
        it). ``None``: ``obs[f'{predicted_key}_fold']`` if present, else ``uns[predicted_key]['params']
        ['library_key']``, else one group.
    n_perms
        Permutations for ``thresholds="permutation"``.
    quantile
        Quantile of the pooled null used as threshold.
    n_neighs
        Neighbours of the mutual-information estimator.
    max_obs
        Annotated observations beyond which relevance is estimated on a seeded subsample of this size (>= 100);
        ``None``: always on all of them.
    random_state
        Seed of the estimator's jitter, of the permutations and of the subsamples.
    key_added
        Prefix of the ``var`` columns and key in ``uns``.
    {copy}

    Returns
    -------
    ``None``, or a copy of the AnnData when ``copy=True``. Sets:

    ``.var[f'{key_added}_relevance']`` : float, shape ``(n_vars,)``
        Mutual information (nats) with the annotation; NaN for genes not predicted.
    ``.var[f'{key_added}']`` : ordered categorical, shape ``(n_vars,)``
        Quadrant of each predicted gene (translation, integration, noise, overestimation); NaN otherwise.
    ``.var[f'{key_added}_overestimation']`` : bool, shape ``(n_vars,)``
        Genes in the overestimation quadrant.
    ``.uns[key_added]`` : dict
        ``genes`` (DataFrame: pcc, relevance, quadrant), ``thresholds`` ``{'relevance', 'pcc'}``, ``shares``,
        ``stability`` (only when subsampled, as in :func:`morphst.tl.quadrants`), ``params``.

    Raises
    ------
    KeyError
        If ``var[f'{predicted_key}_pcc']`` (run :func:`morphst.tl.predict_expression` first), the annotation, the
        layer, or ``layers[predicted_key]`` (for the permutation null) is missing.
    ValueError
        If no gene was predicted, the annotation has fewer than 2 categories, ``var_names`` has duplicates, fixed
        thresholds lie outside the range of their axis, or an option is invalid. Nothing is written then.
    """
    start = logg.info(f"computing gene quadrants of {predicted_key!r} against {annotation_key!r}")
    release_freed_memory()  # what earlier steps freed: this step's peak sits on the data alone
    adata = get_adata(data, table_key)
    col = f"{predicted_key}_pcc"
    if col not in adata.var.columns:
        msg = (
            f"`adata.var[{col!r}]` not found: run `mst.tl.predict_expression(adata, ..., key_added={predicted_key!r})` "
            f"first. Available var columns: {list_keys(adata.var.columns)}."
        )
        raise KeyError(msg)
    opt = c.check_options(thresholds, n_perms, quantile, n_neighs, max_obs)
    check_unique_var_names(adata, "mst.tl.gene_quadrants")
    pcc_all = adata.var[col].to_numpy(dtype=np.float64)
    used = np.isfinite(pcc_all)
    if not used.any():
        msg = f"`adata.var[{col!r}]` is NaN for every gene: no gene was predicted."
        raise ValueError(msg)
    gene_names = adata.var_names[used].tolist()
    pcc = pcc_all[used]
    mask, y, cats = c.labels(adata, annotation_key)
    opt.check_fixed(len(cats), x_name="Pearson r", x_min=-1.0)
    pparams = _predicted_params(adata, predicted_key)
    target = pparams.get("target")
    if layer is None and isinstance(target, str) and target in adata.layers:
        layer = target  # the observed values that predict_expression was trained on
    # the observed values stay where they are (often sparse): rows are read where needed, never all genes densely
    observed, observed_idx = c.observed_matrix(adata, gene_names, layer)
    used_rows = np.flatnonzero(mask)
    if used_rows.size <= opt.n_neighs:
        msg = f"Only {used_rows.size} annotated spots; need more than `n_neighs`={opt.n_neighs}."
        raise ValueError(msg)
    if opt.mode == "permutation":
        library_key = _null_library_key(adata, predicted_key, library_key, pparams)

    rel = c.relevance_rows(used_rows.size, opt.max_obs, random_state, None, opt.n_neighs)
    x_rel = c.read_block(observed, used_rows[rel.rows], observed_idx)
    y_rel = y[rel.rows] if rel.subsampled else y
    mi = rel.mi(x_rel, y_rel, random_state)

    obs = (observed, observed_idx)
    thr_pcc, thr_rel = _thresholds(
        opt, adata, predicted_key, library_key, gene_names, obs, pcc, mi, rel, x_rel, y_rel, random_state
    )
    quad = c.assign(mi > thr_rel, pcc > thr_pcc)
    extra = {}
    if rel.subsampled:
        x_second = c.read_block(observed, used_rows[rel.second], observed_idx)
        quad2 = c.assign(rel.mi(x_second, y[rel.second], random_state) > thr_rel, pcc > thr_pcc)
        extra["stability"] = c.stability(quad, quad2, f"{len(gene_names)} genes")
    df = pd.DataFrame({"pcc": pcc, "relevance": mi, "quadrant": quad}, index=pd.Index(gene_names, name="gene"))
    entry = {
        "genes": df,
        "thresholds": {"relevance": float(thr_rel), "pcc": float(thr_pcc)},
        "shares": c.shares(quad),
        **extra,
        "params": records_params(
            predicted_key=predicted_key,
            annotation_key=annotation_key,
            categories=cats,
            layer=layer,
            library_key=library_key,
            **opt.record(),
            random_state=random_state,
            n_genes=len(gene_names),
            n_obs_used=int(mask.sum()),
            n_obs_excluded_missing_annotation=int((~mask).sum()),
            **rel.record(int(mask.sum()), random_state),
        ),
    }
    summary = f"{int((df['quadrant'] == 'overestimation').sum())} gene(s) in overestimation"
    var = _var_columns(adata.n_vars, used, mi, quad, key_added)
    return c.write(adata, key_added, entry, copy=copy, start=start, summary=summary, var=var)


def _var_columns(n_vars: int, used: np.ndarray, mi: np.ndarray, quad: pd.Categorical, key_added: str) -> dict:
    """The ``var`` columns of :func:`gene_quadrants`: relevance, quadrant, overestimation; NaN for genes not used."""
    rel_col = np.full(n_vars, np.nan)
    rel_col[used] = mi
    q_obj = np.full(n_vars, None, dtype=object)
    q_obj[used] = np.asarray(quad, dtype=object)
    q_col = pd.Categorical(q_obj, categories=list(c.QUADRANTS), ordered=True)
    return {
        f"{key_added}_relevance": rel_col,
        key_added: q_col,
        f"{key_added}_overestimation": np.asarray(q_col == "overestimation", dtype=bool),
    }


def _predicted_params(adata, predicted_key: str) -> dict:
    """``uns[predicted_key]['params']`` of :func:`morphst.tl.predict_expression`, or ``{}``."""
    entry = adata.uns.get(predicted_key)
    params = entry.get("params", {}) if isinstance(entry, dict) else {}
    return params if isinstance(params, dict) else {}


def _null_library_key(adata, predicted_key: str, library_key: str | None, pparams: dict) -> str | None:
    """The groups of the PCC null: ``library_key``, else the folds, else the stored ``library_key``, else none.

    Raises a :class:`KeyError` when the prediction layer (needed for the null) or ``library_key`` is missing.
    """
    if predicted_key not in adata.layers:
        msg = (
            f"`adata.layers[{predicted_key!r}]` not found; it is needed for the permutation null of the PCC "
            f"({run_first('tl.predict_expression', None)}), or use `thresholds='median'` or `(x, y)`."
        )
        raise KeyError(msg)
    if library_key is None:
        for g in (f"{predicted_key}_fold", pparams.get("library_key")):
            if isinstance(g, str) and g in adata.obs.columns:
                library_key = g
                break
    if library_key is not None:
        check_obs_column(adata, library_key)
    return library_key


def _groups(adata, library_key: str | None) -> list[np.ndarray]:
    """Row positions of each ``library_key`` group (in order of appearance); all rows when ``None``."""
    if library_key is None:
        return [np.arange(adata.n_obs)]
    col = adata.obs[library_key]
    return [np.flatnonzero((col == g).to_numpy()) for g in col.dropna().unique()]


def _thresholds(opt, adata, predicted_key, library_key, gene_names, observed, pcc, mi, rel, x_rel, y_rel, random_state):
    """``(pcc, relevance)`` thresholds: fixed, medians, or ``quantile`` of the permutation nulls.

    ``observed``: ``(matrix, column of each gene)`` of the observed values.
    """
    if opt.mode == "fixed":
        return opt.fixed
    if opt.mode == "median":
        return float(np.median(pcc)), float(np.median(mi))
    record, finish = _pcc_null(
        adata.layers[predicted_key],
        observed[0],
        _groups(adata, library_key),
        len(gene_names),
        gene_idx=adata.var_names.get_indexer(gene_names),
        observed_idx=observed[1],
    )
    null_mi, _ = c.permutation_null(
        opt.n_perms,
        np.random.default_rng(random_state),
        y_rel.size,
        lambda perm, p: rel.mi(x_rel, y_rel[perm], random_state + p),
        record,  # the shuffles of the PCC null are taken here, in turn with the relevance's; computed after
    )
    draws = finish()
    null_pcc = np.concatenate(draws) if draws else np.array([np.nan])
    return float(np.nanquantile(null_pcc, opt.quantile)), float(np.quantile(null_mi, opt.quantile))
