"""The checked inputs and modality blocks of :func:`fuse`: each representation centred, scaled and reduced."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..._utils._stats import zscore

#: Values (n_obs × n_features) beyond which a float32 representation is processed in float32 (not copied to
#: float64): 2**28 values are 2 GiB in float64 (e.g. 1,000,000 cells × 268 features).
FLOAT32_ABOVE = 2**28


def work_dtype(x: np.ndarray) -> type:
    """float64, except for a float32 input of more than :data:`FLOAT32_ABOVE` values (bounded memory)."""
    return np.float32 if x.dtype == np.float32 and x.size > FLOAT32_ABOVE else np.float64


def modality_block(x: np.ndarray, n_comps: int, random_state: int) -> tuple[np.ndarray, dict]:
    """Centre, scale the block to unit total variance (keeps relative feature variances), PCA to ``n_comps``.

    One working copy of ``x`` (float64; float32 for a float32 input beyond :data:`FLOAT32_ABOVE` values), centred
    and scaled in place and handed to the PCA without another copy.
    """
    from sklearn.decomposition import PCA

    x = np.array(x, dtype=work_dtype(np.asarray(x)), copy=True)
    x -= x.mean(axis=0)
    # (x**2).sum() (pairwise summation) while a temporary copy is cheap; einsum beyond that
    ss = float((x**2).sum()) if x.size <= FLOAT32_ABOVE else float(np.einsum("ij,ij->", x, x, dtype=np.float64))
    total_sd = float(np.sqrt(ss / max(x.shape[0] - 1, 1)))
    if total_sd == 0:
        msg = "A representation is constant over all observations; it carries no information to fuse."
        raise ValueError(msg)
    x /= total_sd
    k = int(min(n_comps, x.shape[1], x.shape[0] - 1))
    pca = PCA(n_components=k, random_state=random_state, svd_solver="auto", copy=False)
    scores = pca.fit_transform(x)
    info = {"n_comps": k, "variance_captured": float(pca.explained_variance_ratio_.sum())}
    return scores, info


def standardised(x: np.ndarray) -> np.ndarray:
    """Each feature centred and scaled to unit variance (constant features: 0), divided by sqrt(n_features)."""
    z, _ = zscore(x, dtype=work_dtype(np.asarray(x)))
    z /= np.sqrt(z.shape[1])
    return z


def balanced(block: np.ndarray, weight: float) -> np.ndarray:
    """Rescale ``block`` so its total variance equals ``weight``."""
    var = float(block.var(axis=0, ddof=1).sum())
    return block * np.sqrt(weight / var) if var > 0 else block


__all__ = ["FLOAT32_ABOVE", "balanced", "modality_block", "standardised", "work_dtype"]


@dataclass(frozen=True)
class FuseInputs:
    """The checked inputs of :func:`fuse`."""

    use_rep: list[str]
    reps: list[np.ndarray]
    comps: list[int]
    #: one weight per representation, summing to 1
    weights: np.ndarray
    #: ``"smooth"``/``"graph"``: spot coordinates ``(n_obs, 2)``, the section of each spot (or ``None``) and its column
    coords: np.ndarray | None
    groups: np.ndarray | None
    library_key: str | None
    #: morphology columns left out as not significant, per ``obsm`` key (a key with none kept is left out)
    left_out: dict | None = None

    @property
    def n_obs(self) -> int:
        return self.reps[0].shape[0]
