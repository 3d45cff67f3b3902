"""Morphology translation: predict gene expression from patch embeddings, with honest cross-validation.

The "translation" direction of Chelebian, Avenel & Wählby (Nat. Commun. 2025): learn a map from morphology to
expression, evaluate it without leakage (every statistic, gene selection included, on the training fold only), and
apply it to new H&E sections or to a dense grid of patches between the measured spots. The default model is the
HEST-Benchmark linear probe (Jaume et al., NeurIPS 2024): standardise, PCA to at most 256 components, ridge.

Modules: ``_model`` (estimator, inner CV), ``_features`` (spatial context), ``_inputs`` (the model input),
``_folds`` (cross-validation splits), ``_genes`` (target genes and values), ``_cv`` (:func:`predict_expression`; its
checked plan in ``_cv_plan``, its folds fitted and scored in ``_cv_run``), ``_translator`` (:class:`Translator`),
``_fit`` (:func:`fit_translator`), ``_predict`` (a translator on new spots: predictions, applicability, the
prediction table), ``_apply`` (:meth:`Translator.predict_sdata`, :meth:`Translator.predict_grid`),
``_applicability`` (how far new spots lie from the training features), ``_io`` (the versioned translator file),
``_head`` (:class:`FeatureHead`).
"""

from ._cv import predict_expression
from ._features import neighbour_mean
from ._fit import fit_translator
from ._folds import make_folds
from ._head import FeatureHead
from ._model import DEFAULT_ALPHAS, MAX_PCA, make_model
from ._translator import Translator

__all__ = [
    "DEFAULT_ALPHAS",
    "MAX_PCA",
    "FeatureHead",
    "Translator",
    "fit_translator",
    "make_folds",
    "make_model",
    "neighbour_mean",
    "predict_expression",
]
