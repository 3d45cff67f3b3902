"""Applicability domain of a translator: how far new spots lie from its training data, and when to distrust it.

A translator predicts well only on images like the ones it was trained on. Each new spot gets the mean distance to
its ``k`` nearest training spots in the translator's feature space (standardised, then PCA), divided by the same
distance's 95th percentile for *held-out training sections* (each training section measured against the others,
the situation of a new section from the same source). A score above 1 means farther than 95 % of held-out training
spots. A section is out of the training domain when more than twice that share (10 %) of its spots score above 1;
its predictions should not be trusted. Measured on HER2ST C2–C6 with ImageNet DenseNet-121 features (each section
held out in turn): held-out sections have 1–3 % of spots above 1 (median score ~0.6); the same C3 patches with red
and blue swapped 29 %, a heavy H&E re-weighting (haematoxylin × 0.3, eosin × 3, skimage HED) 20 %, greyscale 52 %;
heavy blur and brain tissue (DLPFC) far more. Colour shifts move ImageNet features less than blur or tissue do. This is the nearest-neighbour applicability domain of QSAR modelling (Sheridan et al., *J. Chem. Inf.
Comput. Sci.* 2004; Tropsha, *Mol. Inform.* 2010), calibrated per section as a cross-validated conformal-style
threshold.

With ``scale_per_library`` the model sees features standardised within each section, which removes a
section-wide shift (new stain, scanner, patient) from its input but not from its errors. The distances are then
measured on the features *before* that scaling (``before_scaling=True``), so the score still sees the shift:
scored on the scaled features, a shifted new section would look as close as a training section.

What the score can tell: whether a section's morphology features lie where the training sections' did. What it
cannot: whether the predictions are good there (a section inside the domain can still be predicted poorly, e.g. a
biology the training sections lacked), nor which genes to trust; check it against held-out sections (the
``per_fold`` table of :func:`morphst.tl.predict_expression`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ... import _logging as logg
from ..._constants import Key
from ..._utils._noun import regions_noun
from ..._utils._stats import column_scale

#: Spots' distance: mean over this many nearest training spots.
K_NEIGHBOURS = 5
#: Quantile of held-out training distances that a score of 1 stands for.
QUANTILE = 0.95
#: Principal components of the standardised features that distances are measured in.
N_COMPONENTS = 50
#: Training spots kept as the reference (a seeded subsample beyond this: bounded memory and time).
MAX_REFERENCE = 20_000
#: A section is out of domain when the share of its spots scoring above 1 exceeds this many times ``1 - QUANTILE``.
MAX_EXCESS = 2.0


@dataclass
class ApplicabilityDomain:
    """Reference points and calibration; see the module docstring. Arrays and numbers only (saved with the model)."""

    mean: np.ndarray  # (n_features,)
    scale: np.ndarray  # (n_features,)
    components: np.ndarray  # (n_components, n_features)
    reference: np.ndarray  # (n_ref, n_components)
    threshold: float  # the QUANTILE of held-out distances
    k: int
    quantile: float
    calibration: str  # how the held-out distances were made
    before_scaling: bool = False  # measured on the features before scale_per_library (see the module docstring)

    @classmethod
    def fit(
        cls,
        feats: np.ndarray,
        groups: np.ndarray | None,
        *,
        k: int = K_NEIGHBOURS,
        quantile: float = QUANTILE,
        n_components: int = N_COMPONENTS,
        max_reference: int = MAX_REFERENCE,
        random_state: int = 0,
        before_scaling: bool = False,
    ) -> ApplicabilityDomain:
        """Fit on the training features ``(n, n_features)`` and their sections ``groups`` (or ``None``).

        ``before_scaling``: ``feats`` are the features before ``scale_per_library`` (recorded; new data must be
        scored on its unscaled features too).

        Held-out distances: each section against the other sections (at least two sections), else each of 5
        random folds against the rest (optimistic for new sections: neighbouring spots of one section are alike).
        """
        from sklearn.decomposition import PCA

        x = np.asarray(feats, dtype=np.float64)
        rng = np.random.default_rng(random_state)
        mean, scale, _ = column_scale(x)
        z = (x - mean) / scale
        n_pc = max(1, min(n_components, z.shape[0] - 1, z.shape[1]))
        pca = PCA(n_components=n_pc, random_state=random_state).fit(z)
        p = pca.transform(z)
        k_eff = max(1, min(k, len(p) - 1))
        if groups is not None and len(pd.unique(groups)) >= 2:
            folds = pd.factorize(np.asarray(groups))[0]
            how = f"each of {folds.max() + 1} training sections against the others"
        else:
            folds = rng.permutation(np.arange(len(p)) % 5)
            how = "5 random folds of the training spots (one section: optimistic for new sections)"
        held = []
        for f in np.unique(folds):
            test, ref = p[folds == f], p[folds != f]
            if len(ref) > max_reference:
                ref = ref[rng.choice(len(ref), max_reference, replace=False)]
            held.append(_knn_distance(ref, test, min(k_eff, len(ref))))
        held = np.concatenate(held)
        threshold = float(np.quantile(held, quantile))
        if not threshold > 0:
            threshold = float(np.max(held)) or 1.0
        ref = p if len(p) <= max_reference else p[rng.choice(len(p), max_reference, replace=False)]
        return cls(
            # PCA centres the standardised features again: fold its mean in, so transform is one affine map
            mean=mean + pca.mean_ * scale,
            scale=scale,
            components=np.asarray(pca.components_, dtype=np.float64),
            reference=ref.astype(np.float32),
            threshold=threshold,
            k=int(k_eff),
            quantile=float(quantile),
            calibration=how,
            before_scaling=bool(before_scaling),
        )

    def transform(self, feats: np.ndarray) -> np.ndarray:
        """Features ``(n, n_features)`` -> the reference space ``(n, n_components)``."""
        z = (np.asarray(feats, dtype=np.float64) - self.mean) / self.scale
        return z @ self.components.T

    def score(self, feats: np.ndarray) -> np.ndarray:
        """Per spot: mean distance to the ``k`` nearest training spots over the calibrated threshold, ``(n,)``."""
        return _knn_distance(self.reference, self.transform(feats), self.k) / self.threshold

    def verdict(self, scores: np.ndarray, groups: np.ndarray | None) -> pd.DataFrame:
        """Per section (``groups``; one row ``"all"`` without): spots, median score, share beyond 1, in domain.

        In domain: at most ``MAX_EXCESS × (1 − quantile)`` (10 %) of the section's spots score above 1.
        """
        s = pd.Series(np.asarray(scores, dtype=float))
        g = pd.Series(np.asarray(groups).astype(str) if groups is not None else np.full(len(s), "all"))
        out = pd.DataFrame(
            {
                "n_spots": s.groupby(g).size(),
                "median_score": s.groupby(g).median(),
                "frac_beyond": (s > 1).groupby(g).mean(),
            }
        )
        out["in_domain"] = out["frac_beyond"] <= MAX_EXCESS * (1.0 - self.quantile)
        out.index.name = "section"
        return out

    def to_state(self) -> dict:
        """A dict of arrays and numbers (stored in the translator file)."""
        return {
            "mean": self.mean,
            "scale": self.scale,
            "components": self.components,
            "reference": self.reference,
            "threshold": self.threshold,
            "k": self.k,
            "quantile": self.quantile,
            "calibration": self.calibration,
            "before_scaling": self.before_scaling,
        }

    @classmethod
    def from_state(cls, state: dict) -> ApplicabilityDomain:
        """Inverse of :meth:`to_state`."""
        return cls(
            mean=np.asarray(state["mean"], dtype=np.float64),
            scale=np.asarray(state["scale"], dtype=np.float64),
            components=np.asarray(state["components"], dtype=np.float64),
            reference=np.asarray(state["reference"], dtype=np.float32),
            threshold=float(state["threshold"]),
            k=int(state["k"]),
            quantile=float(state["quantile"]),
            calibration=str(state["calibration"]),
            before_scaling=bool(state.get("before_scaling", False)),  # files of morphst <= 0.x: scaled features
        )

    def warn_out_of_domain(self, verdict: pd.DataFrame) -> None:
        """A ``UserWarning`` naming the sections of ``verdict`` (from :meth:`verdict`) out of the training domain."""
        out = verdict.index[~verdict["in_domain"]].tolist()
        if out:
            rows = verdict.loc[out]
            noun = regions_noun(out)  # the sections of predict_sdata are its shapes elements
            detail = ", ".join(
                f"{s} (median {m:.2f}, {100 * b:.0f}% of {noun} beyond)"
                for s, m, b in zip(out, rows["median_score"], rows["frac_beyond"], strict=True)
            )
            logg.warning(
                f"Out of the translator's training domain: {detail}. Many of their {noun} lie farther from the "
                f"training spots than {100 * self.quantile:.0f}% of held-out training spots do, so the "
                "predictions there are unreliable (new patient, tissue, stain or scanner?). See "
                f"`obs['{Key.APPLICABILITY_SCORE}']` and `Translator.applicability_scores`.",
            )

    def record(self, verdict: pd.DataFrame, library_key: str | None) -> dict:
        """The ``uns`` record of a verdict: per section, the threshold, quantile, calibration (and ``library_key``)."""
        out = {
            "verdict": {
                str(k): {c: getattr(v, "item", lambda v=v: v)() for c, v in row.items()}
                for k, row in verdict.iterrows()
            },
            "threshold": float(self.threshold),
            "quantile": float(self.quantile),
            "max_frac_beyond": MAX_EXCESS * (1.0 - self.quantile),  # the rule of ``in_domain``
            "calibration": self.calibration,
        }
        if library_key is not None:  # the obs column the verdict is per value of (absent: one verdict, "all")
            out["library_key"] = library_key
        return out


def _knn_distance(ref: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    d, _ = NearestNeighbors(n_neighbors=k).fit(ref).kneighbors(query)
    return d.mean(axis=1)
