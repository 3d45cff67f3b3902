"""Morphology translation: predict gene expression from patch embeddings, with honest cross-validation.

The "translation" direction of Chelebian, Avenel & Wählby (Nat. Commun. 2025): learn a map from morphology to
expression, evaluate it without leakage (every statistic, gene selection included, on the training fold only), and
apply it to new H&E sections or to a dense grid of patches between the measured spots. The default regressor is the
HEST-Benchmark linear probe (Jaume et al., NeurIPS 2024): standardise, PCA to at most 256 components, ridge.

Modules: ``_recipe`` (:class:`Recipe`: the inputs and choices, checked once; its design matrix; :func:`fit_rows`, the
one fit step; :func:`recipe_parameters`, its fields as the public functions' keyword parameters), ``_model``
(regressors, inner CV), ``_features`` (spatial context), ``_inputs`` (the model input), ``_folds`` (cross-validation
splits), ``_genes`` (target genes and values), ``_cv`` (:func:`predict_expression`; its folds in ``_cv_plan``, fitted
and scored in ``_cv_run``), ``_fit`` (:func:`fit_translator`), ``_translator`` (:class:`Translator`), ``_predict`` (a
translator on new spots), ``_apply`` (:meth:`Translator.predict_sdata`, :meth:`Translator.predict_grid`),
``_applicability`` (how far new spots lie from the training features), ``_io`` (the versioned translator file). The
head (:class:`~morphst.tl.FeatureHead`) lives in :mod:`morphst.tl._nn`.
"""

from ._cv import predict_expression
from ._fit import fit_translator, resolve_train
from ._recipe import RECIPE, Recipe, fit_rows, recipe_parameters
from ._translator import Translator

__all__ = [
    "RECIPE",
    "Recipe",
    "Translator",
    "fit_rows",
    "fit_translator",
    "predict_expression",
    "recipe_parameters",
    "resolve_train",
]
