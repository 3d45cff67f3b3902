""":func:`learn_features`: the former entry of both objectives, a thin dispatcher to one function per objective."""

from __future__ import annotations

import inspect
import warnings
from typing import TYPE_CHECKING, Any, Literal

from ..._constants import Key
from ._integration_api import learn_integration_features
from ._translation import learn_translation_features

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

OBJECTIVES = ("translation", "integration")
#: The parameters of the integration objective accepted here, with this entry's former ``key_added`` default
#: (``n_components=None``: the significant components, as :func:`learn_integration_features`).
INTEGRATION_DEFAULTS = {
    "annotation_key": None, "expression_rep": "X_pca", "method": "auto", "penalty_weight": 5.0, "n_components": None,
    "train": None, "library_key": Key.LIBRARY, "options": None, "device": None, "table_key": Key.TABLE,
    "random_state": 0, "key_added": "X_learned_integration", "copy": False,
}  # fmt: skip


def learn_features(
    data: AnnData | SpatialData,
    use_rep: str = Key.DEFAULT_REP,
    *,
    objective: Literal["translation", "integration"],
    **kwargs: Any,
) -> AnnData | None:
    """Learn morphology features for one objective (deprecated: call the function of the objective).

    ``objective="translation"`` calls :func:`~morphst.tl.learn_translation_features` with ``kwargs``;
    ``objective="integration"`` calls :func:`~morphst.tl.learn_integration_features` (``key_added`` default here:
    ``"X_learned_integration"``, as before). Parameters of the other objective are ignored, as they were. A ``FutureWarning`` names the function to call instead;
    ``learn_features`` is removed in the next release.

    Parameters
    ----------
    data, use_rep
        See the function of the objective.
    objective
        ``"translation"`` or ``"integration"``.
    **kwargs
        Translation: the parameters of :func:`~morphst.tl.learn_translation_features` (``n_components=None``:
        its default). Integration: ``annotation_key`` (``obs`` labels the features stay relevant to; ``None``:
        the self-supervised spatial objective), ``expression_rep`` (``obsm`` key whose information is penalised),
        ``method`` (``"auto"``, ``"maf"``, ``"multispati"``, ``"hsic"``, ``"residual"``), ``penalty_weight``,
        ``n_components`` (``None``: the significant components), ``train``, ``library_key``, ``options``, ``device``, ``table_key``, ``random_state``,
        ``key_added``, ``copy``.

    Returns
    -------
    What the function of the objective returns; ``obsm[key_added]`` and ``uns[key_added]`` (``curve``,
    ``chosen_epoch``, ``params``) are written.

    Raises
    ------
    ValueError
        An unknown ``objective``; the errors of the function of the objective.
    TypeError
        A keyword argument of neither objective.
    """
    if objective not in OBJECTIVES:
        msg = f"`objective` must be one of {list(OBJECTIVES)}, got {objective!r}."
        raise ValueError(msg)
    translation = set(inspect.signature(learn_translation_features).parameters) - {"data", "use_rep"}
    unknown = sorted(set(kwargs) - translation - set(INTEGRATION_DEFAULTS))
    if unknown:
        msg = f"`learn_features` got unknown keyword argument(s) {unknown}."
        raise TypeError(msg)
    warnings.warn(
        f"`learn_features(objective={objective!r})` is now `learn_{objective}_features(...)`, whose parameters all "
        "apply to the objective; `learn_features` will be removed in the next release.",
        FutureWarning,
        stacklevel=2,
    )
    if objective == "translation":
        dropped = ("n_components", "key_added")  # None there: the function's default
        kw = {k: v for k, v in kwargs.items() if k in translation and not (v is None and k in dropped)}
        return learn_translation_features(data, use_rep, **kw)
    kw = {k: v for k, v in kwargs.items() if k in INTEGRATION_DEFAULTS}
    return learn_integration_features(data, use_rep, **{**INTEGRATION_DEFAULTS, **kw})
