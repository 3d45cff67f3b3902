"""Learned morphology features (Box 1 of Chelebian, Avenel & Wählby, Nat. Commun. 2025).

Modules: ``_api`` (:func:`learn_features`), ``_integration_api`` (:func:`learn_integration_features`),
``_integration`` (``fit_integration``: the ``"residual"`` baseline, dispatch to ``"hsic"``), ``_spatial_components``
(``"maf"``, ``"multispati"``: spatial components with a permutation null), ``_hsic`` (the trained ``"hsic"``
projection), ``_linear`` (statistics of the training rows, spatial neighbour lists), ``_torch`` (training options,
seeding, device, the inner early-stopping split). The translation head itself is
:class:`morphst.tl._translation._head.FeatureHead`.
"""

from ._api import learn_features
from ._integration_api import learn_integration_features
from ._torch import TrainOptions

__all__ = ["TrainOptions", "learn_features", "learn_integration_features"]
