"""The recipe of a translation: its inputs and choices, checked once; the design matrix it assembles; the fit step.

:class:`Recipe` is what :func:`~morphst.tl.predict_expression`, :func:`~morphst.tl.fit_translator`,
:func:`~morphst.tl.learn_translation_features` and a :class:`~morphst.tl.Translator` share: checked once
(:meth:`Recipe.check`), it assembles the model input of a table once (:meth:`Recipe.design`) and records itself
(:meth:`Recipe.record`, for ``uns[key]['params']`` and the translator file). :func:`fit_rows` is the one fit step of
the cross-validation folds and of a translator. A new fit option is a field here and its use in
:meth:`Recipe.design` or :func:`fit_rows`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from ..._constants import Key
from ._features import check_spatial_context, context_caps, warn_caps
from ._folds import section_groups
from ._genes import GenePlan, dense_cols, make_gene_plan
from ._inputs import Inputs, check_global_context, check_scaling, context_keys, read_inputs
from ._model import DEFAULT_ALPHAS, check_alphas, check_model, fit_model, make_model, validate_random_state

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData


@dataclass(frozen=True)
class Recipe:
    """The inputs and choices of a translation (see :func:`morphst.tl.predict_expression` for each field)."""

    use_rep: str
    target: str = Key.TARGET
    genes: str | tuple[str, ...] = Key.MORPH_TARGET
    select_on_train: bool = True
    spatial_context: int | None = None
    context_rep: tuple[str, ...] | None = None
    global_context: bool = False
    scale_per_library: bool = False
    library_key: str | None = Key.LIBRARY
    regressor: Any = "ridge"
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    random_state: int | None = 0

    @classmethod
    def check(cls, **fields_: Any) -> Recipe:
        """The recipe of ``fields_`` with every value checked (``ValueError`` naming the first bad one)."""
        r = cls(**fields_)
        validate_random_state(r.random_state)
        check_global_context(r.global_context)
        check_model(r.regressor)
        genes = r.genes if isinstance(r.genes, str) else tuple(str(g) for g in r.genes)
        ctx = context_keys(r.context_rep)
        return cls(
            **{
                **r.as_dict(),
                "genes": genes,
                "spatial_context": check_spatial_context(r.spatial_context),
                "context_rep": None if ctx is None else tuple(ctx),
                "global_context": bool(r.global_context),
                "scale_per_library": bool(r.scale_per_library),
                "alphas": tuple(check_alphas(r.alphas)),
            }
        )

    @classmethod
    def from_call(cls, arguments: dict, where: str) -> Recipe:
        """The checked recipe of a public function's ``arguments`` (its ``locals()``): the fields it names.

        ``model`` (the former name of ``regressor``) is taken with a ``FutureWarning`` naming ``where``.
        """
        kept = {f.name: arguments[f.name] for f in fields(cls) if f.name in arguments}
        kept["regressor"] = regressor_of(kept["regressor"], arguments.get("model"), where)
        return cls.check(**kept)

    @classmethod
    def from_record(cls, record: dict) -> Recipe:
        """The recipe stored by :meth:`record` (a translator file); the regressor stays its description."""
        kept = {f.name: record[f.name] for f in fields(cls) if f.name in record}
        for name in ("genes", "context_rep", "alphas"):
            if isinstance(kept.get(name), list):
                kept[name] = tuple(kept[name])
        return cls(**kept)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (not copied: the regressor stays the object passed)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def record(self) -> dict[str, Any]:
        """The recipe as plain values: lists for tuples, the regressor's name or ``repr``."""
        out = asdict(self) if isinstance(self.regressor, str) else {**self.as_dict(), "regressor": repr(self.regressor)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def design(self, adata: AnnData) -> Design:
        """Check the recipe against ``adata`` and assemble its model input once (see :class:`Design`).

        Raises ``KeyError`` for a missing ``obsm`` key, target layer, gene column or section column and
        ``ValueError`` for bad values, before anything is written.
        """
        inputs = read_inputs(adata, self.use_rep, self.target, self.spatial_context, self.context_rep)
        genes = make_gene_plan(adata, self.genes, self.select_on_train)
        groups = section_groups(adata, self.library_key)
        check_scaling(self.scale_per_library, groups, self.library_key, adata)
        caps = context_caps(inputs.k_ctx, groups, adata.n_obs)
        return Design(self, adata.var_names, inputs, genes, groups, caps)


@dataclass
class Design:
    """The model input of one table under a :class:`Recipe`: features, blocks, target, genes, sections."""

    recipe: Recipe
    var_names: pd.Index
    inputs: Inputs
    genes: GenePlan
    groups: np.ndarray | None  # section of each row, or None (one section)
    caps: dict  # {section: neighbours used} where spatial_context was capped
    x: np.ndarray | None = None  # (n_obs, n_features) float32, standardised per section with scale_per_library
    blocks: list | None = None  # [(name, width), ...] of x

    def __post_init__(self) -> None:
        r = self.recipe
        self.x, self.blocks = self.inputs.features(
            self.groups, global_context=r.global_context, scale=r.scale_per_library
        )

    def warn_caps(self) -> None:
        """Warn naming the sections where ``spatial_context`` was capped."""
        warn_caps(self.caps, self.inputs.k_ctx)

    def unscaled(self) -> np.ndarray:
        """The model input before ``scale_per_library`` (the features the applicability domain is measured on)."""
        if not self.recipe.scale_per_library:
            return self.x
        return self.inputs.features(self.groups, global_context=self.recipe.global_context, scale=False)[0]

    def genes_for(self, rows: np.ndarray) -> np.ndarray:
        """Positions of the target genes chosen on the training ``rows``."""
        return np.flatnonzero(self.genes.genes_for(self.var_names, rows))

    def target(self, rows: np.ndarray, gidx: np.ndarray) -> np.ndarray:
        """Dense float64 target of ``rows`` and genes ``gidx``."""
        return dense_cols(self.inputs.y, rows, gidx)


def fit_rows(design: Design, rows: np.ndarray, y: np.ndarray) -> tuple[Any, str]:
    """The one fit step: the recipe's regressor fit on ``design.x[rows]`` and targets ``y``; ``(estimator, text)``.

    Its inner cross-validation (ridge penalty) and early stopping (head) see the sections of ``rows`` only.
    """
    r = design.recipe
    inner = None if design.groups is None else design.groups[rows]
    est, description = make_model(
        r.regressor, n_train=len(rows), n_features=design.x.shape[1], inner_groups=inner, alphas=r.alphas,
        random_state=r.random_state, blocks=design.blocks,
    )  # fmt: skip
    est, note = fit_model(est, design.x[rows], y, inner_groups=inner, alphas=r.alphas, random_state=r.random_state)
    return est, description + note


def regressor_of(regressor: Any, model: Any, where: str) -> Any:
    """``regressor``, or the deprecated ``model=`` keyword when given (``FutureWarning`` naming ``regressor=``)."""
    if model is None:
        return regressor
    import warnings

    warnings.warn(
        f"`{where}(model=...)` is now `regressor=` (the encoder is the `model` of `embed_patches`); `model=` will be "
        "removed in the next release.",
        FutureWarning,
        stacklevel=4,
    )
    return model


__all__ = ["Design", "Recipe", "fit_rows", "regressor_of"]
