"""What :func:`quadrants` and :func:`gene_quadrants` share: validation, relevance, the permutation null, the writer.

Relevance (mutual information with the annotation) is the costly axis: scikit-learn's kNN estimator on all
annotated observations up to ``max_obs`` of them, beyond that on a seeded
subsample of ``max_obs`` observations with the same estimator computed on sorted values
(:func:`morphst._utils._stats.mutual_info_1d`), its permutation null on the same subsample, and a second,
independent subsample to check that the quadrant shares are stable (:data:`STABILITY_TOL`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..._utils import check_obs_column, list_keys
from ..._utils._sdata import did_you_mean
from ..._utils._stats import mutual_info_1d
from ..._utils._write import save_results

if TYPE_CHECKING:
    from anndata import AnnData

#: Quadrant names in the order of Box 2 (I, II, III, IV).
QUADRANTS: tuple[str, ...] = ("translation", "integration", "noise", "overestimation")
#: Default ``max_obs``: annotated observations beyond which relevance is estimated on a seeded subsample.
MAX_OBS = 20_000
#: Largest difference of a quadrant's share between the two subsamples before a warning (fraction of features).
STABILITY_TOL = 0.05
#: What to run when the morphological features (``obsm[use_rep]``) are missing.


# ---------------------------------------------------------------------------------------------------------- inputs
def labels(adata: AnnData, annotation_key: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return (mask of annotated spots, integer codes of those spots, category names); needs >= 2 categories."""
    col = check_obs_column(adata, annotation_key)
    mask = ~pd.isna(col).to_numpy()
    cat = pd.Categorical(col[mask].astype(str))
    cats = list(cat.categories)
    if len(cats) < 2:
        msg = (
            f"`adata.obs[{annotation_key!r}]` has {len(cats)} distinct non-missing value(s) ({cats}); "
            "relevance (mutual information) needs an annotation with at least 2 categories."
        )
        raise ValueError(msg)
    return mask, np.asarray(cat.codes, dtype=np.int64), cats


def resolve_genes(adata: AnnData, genes: str | Sequence[str]) -> list[str]:
    """Return the list of gene names to use, or raise an actionable error."""
    if isinstance(genes, str):
        if genes != "highly_variable":
            msg = f"`genes` must be 'highly_variable' or a list of gene names, got the string {genes!r}."
            raise ValueError(msg)
        if "highly_variable" not in adata.var.columns:
            msg = (
                "`adata.var['highly_variable']` not found. Run `sc.pp.highly_variable_genes(adata, ...)` on "
                "log-normalised data first, or pass an explicit list of genes (`genes=[...]`)."
            )
            raise KeyError(msg)
        names = adata.var_names[adata.var["highly_variable"].to_numpy(dtype=bool)].tolist()
        if not names:
            msg = "`adata.var['highly_variable']` selects no gene; rerun `sc.pp.highly_variable_genes`."
            raise ValueError(msg)
        return names
    names = [str(g) for g in genes]
    if not names:
        msg = "`genes` is empty: pass at least one gene name."
        raise ValueError(msg)
    missing = [g for g in names if g not in adata.var_names]
    if missing:
        msg = f"{len(missing)} gene(s) not in `adata.var_names`: {missing[:10]}{' ...' if len(missing) > 10 else ''}."
        raise KeyError(msg)
    if len(set(names)) != len(names):
        msg = "`genes` contains duplicated names."
        raise ValueError(msg)
    return names


def read_block(x, rows, cols: np.ndarray) -> np.ndarray:
    """Dense ``x[rows][:, cols]`` of an array or a sparse matrix (``rows``: indices or a slice); float32 stays
    float32, any other dtype is read as float64."""
    if hasattr(x, "toarray"):
        b = x[rows][:, cols].toarray()
    else:
        b = np.asarray(x[rows][:, cols] if isinstance(rows, slice) else x[np.ix_(rows, cols)])
    return b if b.dtype == np.float32 else b.astype(np.float64)


def observed_matrix(
    adata: AnnData, genes: list[str], layer: str | None, block: int = 65_536
) -> tuple[object, np.ndarray]:
    """``(X or layers[layer], column of each gene)``, checked in row blocks for NaN/inf in those columns (no copy).

    Raises
    ------
    KeyError
        If ``layer`` is not in ``adata.layers``.
    ValueError
        If the genes' values hold NaN or infinite values.
    """
    x = _layer(adata, layer)
    idx = adata.var_names.get_indexer(genes)
    for s in range(0, adata.n_obs, block):
        if not np.all(np.isfinite(read_block(x, slice(s, s + block), idx))):
            raise ValueError(_not_finite(layer))
    return x, idx


def _layer(adata: AnnData, layer: str | None):
    """``adata.X`` or ``adata.layers[layer]``; a ``KeyError`` naming the layers (and a close one) otherwise."""
    if layer is not None and layer not in adata.layers:
        msg = (
            f"Layer {layer!r} not found in `adata.layers`. Available: {list_keys(adata.layers.keys())}."
            f"{did_you_mean(layer, adata.layers.keys())}"
        )
        raise KeyError(msg)
    return adata.X if layer is None else adata.layers[layer]


def _not_finite(layer: str | None) -> str:
    return f"Expression ({'X' if layer is None else f'layer {layer!r}'}) contains NaN or infinite values."


def expression(adata: AnnData, genes: list[str], layer: str | None, keep_float32: bool = False) -> np.ndarray:
    """Dense float64 matrix (n_obs × n_genes) of ``layer`` (or X) for ``genes``; float32 stays float32 on request."""
    x = _layer(adata, layer)[:, adata.var_names.get_indexer(genes)]
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x)
    x = x.astype(np.float32 if keep_float32 and x.dtype == np.float32 else np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(_not_finite(layer))
    return x


def warn_if_counts(x: np.ndarray, layer: str | None) -> None:
    if x.size and x.max() > 50 and np.all(x == np.round(x)):
        msg = (
            f"{'X' if layer is None else f'layer {layer!r}'} looks like raw counts; correlations are meant for "
            "log-normalised expression (e.g. `sc.pp.normalize_total` then `sc.pp.log1p`, or pass `layer=`)."
        )
        warnings.warn(msg, UserWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------------------- options
@dataclass
class Options:
    """The validated options both functions share."""

    mode: str  # "permutation" | "median" | "fixed"
    fixed: tuple[float, float] | None
    n_perms: int
    quantile: float
    n_neighs: int
    max_obs: int | None

    def check_fixed(self, n_categories: int, *, x_name: str, x_min: float) -> None:
        """Fixed thresholds must lie where the axes have values, else a quadrant is empty by construction.

        x: ``[x_min, 1)`` (|r| has ``x_min = 0``, Pearson r ``-1``; a value must be *strictly above* it, and none
        is above 1). y: mutual information in nats, ``[0, ln(n_categories))`` (its largest possible value).
        """
        if self.fixed is None:
            return
        x, y = self.fixed
        if not x_min <= x < 1:
            msg = (
                f"`thresholds[0]` (the {x_name} threshold) must lie in [{x_min:g}, 1): a feature counts when its value "
                f"is strictly above it, and {x_name} never exceeds 1; got {x!r}."
            )
            raise ValueError(msg)
        y_max = float(np.log(n_categories))
        if not 0 <= y < y_max:
            msg = (
                f"`thresholds[1]` (the relevance threshold, mutual information in nats) must lie in [0, {y_max:.3g}) "
                f"for an annotation of {n_categories} categories (ln {n_categories} is the largest possible value); "
                f"got {y!r}."
            )
            raise ValueError(msg)

    def record(self) -> dict:
        """The options as ``params`` entries."""
        perm = self.mode == "permutation"
        return {
            "thresholds": self.mode if self.mode != "fixed" else list(self.fixed),
            "n_perms": self.n_perms if perm else 0,
            "quantile": self.quantile if perm else None,
            "n_neighs": self.n_neighs,
            "max_obs": self.max_obs,
        }


def check_options(thresholds, n_perms, quantile, n_neighs, max_obs) -> Options:
    """Validate the shared options (before anything is computed); raise ValueError naming the option."""
    bad_thr = f"`thresholds` must be 'permutation', 'median' or a pair (x, y) of numbers, got {thresholds!r}."
    if isinstance(thresholds, str):
        if thresholds not in ("permutation", "median"):
            raise ValueError(bad_thr)
        mode, fixed = thresholds, None
    else:
        try:
            x, y = (float(v) for v in thresholds)
        except (TypeError, ValueError):
            raise ValueError(bad_thr) from None
        if not (np.isfinite(x) and np.isfinite(y)):
            msg = f"`thresholds` must be finite numbers, got {thresholds!r}."
            raise ValueError(msg)
        mode, fixed = "fixed", (x, y)
    if mode == "permutation" and (int(n_perms) != n_perms or n_perms < 1):
        msg = f"`n_perms` must be a positive integer, got {n_perms!r}."
        raise ValueError(msg)
    if not 0 < quantile < 1:
        msg = f"`quantile` must be in (0, 1), got {quantile!r}."
        raise ValueError(msg)
    if isinstance(n_neighs, bool) or not isinstance(n_neighs, int | np.integer) or n_neighs < 1:
        msg = f"`n_neighs` must be a positive integer (neighbours of the MI estimator), got {n_neighs!r}."
        raise ValueError(msg)
    if max_obs is not None and (isinstance(max_obs, bool) or not isinstance(max_obs, int | np.integer)):
        msg = f"`max_obs` must be an integer >= 100 or None, got {max_obs!r}."
        raise ValueError(msg)
    if max_obs is not None and max_obs < 100:
        msg = f"`max_obs` must be an integer >= 100 or None, got {max_obs!r}."
        raise ValueError(msg)
    return Options(mode, fixed, int(n_perms), float(quantile), int(n_neighs), None if max_obs is None else int(max_obs))


# ------------------------------------------------------------------------------------------------------- relevance
@dataclass
class Relevance:
    """Where relevance is estimated: all annotated rows, or a seeded subsample of them (and a second one)."""

    rows: np.ndarray  # positions (into the annotated rows) of the subsample, or all of them
    second: np.ndarray | None  # positions of the independent second subsample; None when not subsampled
    n_jobs: int | None
    n_neighs: int
    notes: list[str] = field(default_factory=list)

    @property
    def subsampled(self) -> bool:
        return self.second is not None

    def mi(self, x: np.ndarray, y: np.ndarray, random_state: int) -> np.ndarray:
        """Mutual information (nats) of each column of ``x`` with ``y`` (rows already those of the subsample).

        scikit-learn's ``mutual_info_classif`` estimator computed on sorted values (:func:`mutual_info_1d`, equal
        to ~1e-6 nats), on every path.
        """
        return mutual_info_1d(x, y, n_neighbors=self.n_neighs, random_state=random_state, n_jobs=self.n_jobs)

    def record(self, n_used: int, random_state: int) -> dict:
        if not self.subsampled:
            return {}
        return {
            "relevance_subsample": int(self.rows.size),
            "relevance_subsample_rule": f"numpy.random.default_rng([{random_state}, 1]).permutation({n_used}): "
            f"first {self.rows.size} annotated observations (second subsample: the next {self.second.size})",
        }


def relevance_rows(n_used: int, max_obs: int | None, random_state: int, n_jobs: int | None, n_neighs: int):
    """All ``n_used`` annotated rows when ``n_used <= max_obs`` (or ``max_obs`` is None), else two seeded subsamples.

    The subsamples are disjoint when ``n_used >= 2 * max_obs``, else the second one overlaps the first.
    """
    if max_obs is None or n_used <= max_obs:
        return Relevance(np.arange(n_used), None, n_jobs, n_neighs)
    perm = np.random.default_rng([random_state, 1]).permutation(n_used)
    first = np.sort(perm[:max_obs])
    second = np.sort(perm[max_obs : 2 * max_obs] if n_used >= 2 * max_obs else perm[-max_obs:])
    return Relevance(first, second, n_jobs, n_neighs)


# ------------------------------------------------------------------------------------------------------ thresholds
def permutation_null(
    n_perms: int,
    rng: np.random.Generator,
    n_labels: int,
    relevance_null: Callable[[np.ndarray, int], np.ndarray],
    x_null: Callable[[np.random.Generator], np.ndarray | None],
) -> tuple[np.ndarray, np.ndarray]:
    """The pooled permutation nulls of both axes.

    Per permutation ``p``: ``relevance_null(permutation of the labels, p)`` (relevance with shuffled labels), then
    ``x_null(rng)`` (the other axis with observations shuffled; ``None`` when it has nothing for this draw).
    Returns the two pooled arrays (the second ``[nan]`` when empty).
    """
    null_rel, null_x = [], []
    for p in range(int(n_perms)):
        null_rel.append(relevance_null(rng.permutation(n_labels), p))
        v = x_null(rng)
        if v is not None:
            null_x.append(v)
    return np.concatenate(null_rel), (np.concatenate(null_x) if null_x else np.array([np.nan]))


def assign(relevant: np.ndarray, shared: np.ndarray) -> pd.Categorical:
    out = np.where(
        relevant & shared,
        QUADRANTS[0],
        np.where(relevant, QUADRANTS[1], np.where(shared, QUADRANTS[3], QUADRANTS[2])),
    )
    return pd.Categorical(out, categories=list(QUADRANTS), ordered=True)


def shares(quadrant: pd.Categorical) -> dict[str, float]:
    n = len(quadrant)
    return {q: float((np.asarray(quadrant) == q).sum() / n) if n else 0.0 for q in QUADRANTS}


def stability(first: pd.Categorical, second: pd.Categorical, what: str) -> dict:
    """Agreement of the quadrants found on two independent subsamples; a warning beyond :data:`STABILITY_TOL`."""
    s1, s2 = shares(first), shares(second)
    diff = max(abs(s1[q] - s2[q]) for q in QUADRANTS)
    out = {
        "agreement": float(np.mean(np.asarray(first) == np.asarray(second))),
        "max_share_difference": float(diff),
        "tolerance": STABILITY_TOL,
        "shares_second_subsample": s2,
        "stable": bool(diff <= STABILITY_TOL),
    }
    if diff > STABILITY_TOL:
        msg = (
            f"The quadrant shares of the {what} differ by up to {diff:.1%} between two independent subsamples "
            f"(tolerance {STABILITY_TOL:.0%}; agreement {out['agreement']:.1%}): relevance is not stable at this "
            "subsample size. Raise `max_obs` (or pass `max_obs=None` to use every observation)."
        )
        warnings.warn(msg, UserWarning, stacklevel=3)
    return out


# ---------------------------------------------------------------------------------------------------------- writer
def write(
    adata: AnnData,
    key_added: str,
    entry: dict,
    *,
    copy: bool,
    start: float,
    summary: str,
    varm: np.ndarray | None = None,
    var: dict[str, object] | None = None,
) -> AnnData | None:
    """Write the results (after everything is computed): ``varm``/``var``, then ``uns[key_added] = entry``; log them."""
    added = [] if varm is None else [("varm", key_added, varm)]
    added += [("var", col, values) for col, values in (var or {}).items()]
    return save_results(adata, [*added, ("uns", key_added, entry)], copy=copy, start=start, summary=summary)
