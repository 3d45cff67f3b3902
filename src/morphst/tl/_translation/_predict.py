"""A fitted `Translator` on new spots: predictions, applicability scores and verdict, and the prediction table.

Functions of a :class:`~morphst.tl.Translator` ``tr`` (untyped here: the class imports this module) that read only
its public attributes; the methods
:meth:`~morphst.tl.Translator.predict`, ``applicability_scores``, ``predict_adata`` and ``predict_sdata`` call them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..._constants import Key
from ..._utils import records_params
from ._folds import section_groups

if TYPE_CHECKING:
    from anndata import AnnData


def groups_of(tr, adata: AnnData, library_key: str | None) -> np.ndarray | None:
    """Section of each spot: ``obs[library_key]`` (default: the training one if ``adata`` has it), or ``None``.

    A ``library_key`` passed explicitly must be an ``obs`` column (``KeyError`` otherwise).
    """
    if library_key is None:
        lk = tr.library_key
        return section_groups(adata, lk) if lk is not None and lk in adata.obs.columns else None
    return section_groups(adata, library_key)


def domain_features(tr, adata: AnnData, feats: np.ndarray, library_key: str | None) -> np.ndarray:
    """The features the applicability domain was measured on: ``feats``, or those before per-section scaling."""
    if tr.applicability is not None and tr.applicability.before_scaling and tr.scale_per_library:
        return tr.features(adata, library_key=library_key, scaled=False)
    return feats


def check_domain(tr, feats: np.ndarray, groups: np.ndarray | None):
    """Scores and per-section verdict of ``feats``; warns naming the sections out of the training domain."""
    if tr.applicability is None:
        return None, None
    scores = tr.applicability.score(feats)
    verdict = tr.applicability.verdict(scores, groups)
    tr.applicability.warn_out_of_domain(verdict)
    return scores, verdict


def predict_scored(tr, adata: AnnData, library_key: str | None):
    """``(predictions, scores, verdict)``: features and applicability computed once (warns once)."""
    f = tr.features(adata, library_key=library_key)
    scores, verdict = check_domain(tr, domain_features(tr, adata, f, library_key), groups_of(tr, adata, library_key))
    pred = np.asarray(tr.estimator.predict(f), dtype=np.float32).reshape(len(f), len(tr.genes))
    return pred, scores, verdict


def prediction_table(tr, adata: AnnData, library_key: str | None, extra: dict, uns: dict | None = None) -> AnnData:
    """Predictions of ``adata`` as a new table with its applicability scores and verdict (computed once)."""
    import anndata as ad

    pred, scores, verdict = predict_scored(tr, adata, library_key)
    out = ad.AnnData(
        pred,
        obs=adata.obs.copy(),
        var=pd.DataFrame(index=pd.Index(tr.genes, name="gene")),
        obsm={k: np.asarray(v) for k, v in adata.obsm.items()},
        uns=uns,
    )
    out.uns[Key.TRANSLATION] = {"params": records_params(target=tr.target, **_summary(tr), **extra)}
    lk = tr.library_key if library_key is None else library_key
    _write_domain(tr, out, scores, verdict, lk if lk in adata.obs.columns else None)
    return out


def _write_domain(tr, out: AnnData, scores, verdict, library_key: str | None) -> None:
    if tr.applicability is None:
        return
    out.obs[Key.APPLICABILITY_SCORE] = scores.astype(np.float32)
    out.uns[Key.TRANSLATION]["applicability"] = tr.applicability.record(verdict, library_key)


def _summary(tr) -> dict:
    return {
        "use_rep": tr.use_rep,
        "spatial_context": tr.spatial_context,
        "n_genes": len(tr.genes),
        "model_description": tr.fit["model_description"],
    }


__all__ = ["check_domain", "domain_features", "groups_of", "predict_scored", "prediction_table"]
