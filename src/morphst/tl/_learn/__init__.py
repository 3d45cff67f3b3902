"""Learned morphology features (Box 1 of Chelebian, Avenel & Wählby, Nat. Commun. 2025).

Modules: ``_api`` (:func:`learn_features`), ``_integration`` (the integration objective: ``fit_integration``, the
``"moran"`` and ``"residual"`` methods), ``_hsic`` (the trained ``"hsic"`` projection), ``_linear`` (statistics of
the training rows, spatial neighbour lists), ``_torch`` (training options, seeding, device, the inner
early-stopping split). The translation head itself is
:class:`morphst.tl._translation._head.FeatureHead`.
"""

from ._api import learn_features
from ._torch import TrainOptions

__all__ = ["TrainOptions", "learn_features"]
