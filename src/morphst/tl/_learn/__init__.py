"""Learned morphology features (Box 1 of Chelebian, Avenel & Wählby, Nat. Commun. 2025).

Modules: ``_translation`` (:func:`learn_translation_features`), ``_api`` (:func:`learn_features`, the former entry
of both objectives), ``_common`` (width check, training spots, the writer), ``_integration`` (the integration
objective: ``fit_integration``, the ``"moran"`` and ``"residual"`` methods), ``_hsic`` (the trained ``"hsic"``
projection), ``_linear`` (statistics of the training rows, spatial neighbour lists), ``_torch`` (the training
plumbing of :mod:`morphst.tl._nn`). Imports the public names of :mod:`morphst.tl._translation` and
:mod:`morphst.tl._nn` only.
"""

from .._nn import TrainOptions
from ._api import learn_features
from ._translation import learn_translation_features

__all__ = ["TrainOptions", "learn_features", "learn_translation_features"]
