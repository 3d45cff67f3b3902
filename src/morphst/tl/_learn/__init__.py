"""Learned morphology features (Box 1 of Chelebian, Avenel & Wählby, Nat. Commun. 2025).

Modules: ``_translation`` (:func:`learn_translation_features`), ``_integration_api``
(:func:`learn_integration_features`), ``_api`` (:func:`learn_features`, the former entry of both objectives, a
deprecated dispatcher), ``_common`` (width check, training spots, the writer), ``_integration`` (``fit_integration``:
the ``"residual"`` baseline, dispatch to ``"hsic"``), ``_spatial_components`` (``"maf"``, ``"multispati"``: spatial
components with a permutation null), ``_hsic`` (the trained ``"hsic"`` projection), ``_shared`` (how much of a
feature expression predicts), ``_linear`` (statistics of the training rows, spatial neighbour lists). Training plumbing comes from
:mod:`morphst.tl._nn`. Imports the public names of :mod:`morphst.tl._translation` and :mod:`morphst.tl._nn` only.
"""

from .._nn import TrainOptions
from ._api import learn_features
from ._integration_api import learn_integration_features
from ._translation import learn_translation_features

__all__ = ["TrainOptions", "learn_features", "learn_integration_features", "learn_translation_features"]
