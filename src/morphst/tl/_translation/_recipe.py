"""The recipe of a translation: its inputs and choices, checked once; the design matrix it assembles; the fit step.

:class:`Recipe` is what :func:`~morphst.tl.predict_expression`, :func:`~morphst.tl.fit_translator`,
:func:`~morphst.tl.learn_translation_features` and a :class:`~morphst.tl.Translator` share: checked once
(:meth:`Recipe.check`), it assembles the model input of a table once (:meth:`Recipe.design`) and records itself
(:meth:`Recipe.record`, for ``uns[key]['params']`` and the translator file). :func:`fit_rows` is the one fit step of
the cross-validation folds and of a translator. Each field carries its documentation and group; the public
functions take the fields as keyword parameters through :func:`recipe_parameters`, which writes their signatures
and the fields' entries of their docstrings. A new fit option is a field here (default, annotation, doc, group) and
its use in :meth:`Recipe.design` or :func:`fit_rows` (and :meth:`Recipe.check` for its check).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from ..._constants import Key
from ..._docs import document_parameters
from ._features import check_spatial_context, context_caps, warn_caps
from ._folds import section_groups
from ._genes import GenePlan, dense_cols, gene_columns, make_gene_plan
from ._inputs import Inputs, check_global_context, check_scaling, context_keys, read_inputs
from ._model import DEFAULT_ALPHAS, check_alphas, check_model, fit_model, make_model, validate_random_state

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

_F = TypeVar("_F", bound=Callable)

#: The groups of :class:`Recipe` fields: what a translation maps from and to, the extra input blocks, how it is fit.
GROUPS = ("inputs", "context", "fit")


def _about(group: str, doc: str) -> dict[str, str]:
    """``metadata`` of a :class:`Recipe` field: its group (:data:`GROUPS`) and the text of its docstring entry."""
    return {"group": group, "doc": doc}


@dataclass(frozen=True)
class Recipe:
    """The inputs and choices of a translation.

    Each field's ``metadata`` holds its group (:data:`GROUPS`) and the text of its entry in the public functions'
    docstrings (:func:`recipe_parameters`). The annotations are what those functions accept; :meth:`check` stores
    sequences as tuples.
    """

    use_rep: str = field(
        default=Key.DEFAULT_REP,
        metadata=_about("inputs", "``obsm`` key of the patch embeddings, ``(n_obs, n_features)``."),
    )
    genes: str | Sequence[str] = field(
        default=Key.MORPH_TARGET,
        metadata=_about(
            "inputs",
            """\
Target genes: a boolean ``var`` column or a list of names. A column written by :func:`morphst.pp.select_genes`
(or the default ``"morph_target"`` not yet computed: 50 highly variable genes by Pearson residuals) is
re-selected on each training set with its stored rule (:class:`morphst.pp.GeneSelection`) when
``select_on_train``; another boolean column is used as it is.""",
        ),
    )
    target: str = field(
        default=Key.TARGET,
        metadata=_about(
            "inputs",
            """\
What to predict: ``"log1p_cp10k"`` (log1p of counts per 10,000; the layer if present, else computed from the raw
counts in ``X``), a layer name, or ``"X"``.""",
        ),
    )
    regressor: Literal["ridge", "mlp", "head", "finetune"] | Any = field(
        default="ridge",
        metadata=_about(
            "fit",
            """\
``"ridge"`` (standardise, PCA to at most 256 components, :class:`~sklearn.linear_model.RidgeCV` with the penalty
from an inner cross-validation grouped by ``library_key`` on the training set: the HEST-Benchmark linear probe),
``"mlp"`` (the same, then one hidden layer of 256 units with early stopping), ``"head"``
(:class:`~morphst.tl.FeatureHead`, one token per input block, early-stopped on a held-out training section; pass
a ``FeatureHead(...)`` to set its options), ``"finetune"`` (:class:`~morphst.tl.LastBlockFinetune`: the encoder's
last block and the head trained per fit on the activations :func:`~morphst.tl.cache_activations` wrote to
``use_rep``), or any scikit-learn regressor (cloned per fit).""",
        ),
    )
    library_key: str | None = field(
        default=Key.LIBRARY,
        metadata=_about(
            "inputs",
            """\
``obs`` column of the section of each spot: the groups of the regressor's inner split (cross-validation, early
stopping), of spatial neighbours, of section tokens and of per-section scaling. ``None``, or the default
``"section"`` when there is no such column: all spots form one section; any other name that is not a column is a
``KeyError``.""",
        ),
    )
    select_on_train: bool = field(
        default=True,
        metadata=_about(
            "fit", "Re-select the target genes on the training spots (no test statistic enters the gene choice)."
        ),
    )
    spatial_context: int | None = field(
        default=None,
        metadata=_about(
            "context",
            """\
Number ``k`` of spatial neighbours (``obsm['spatial']``, same section, sparse kNN) whose mean embedding is
appended (SEPAL / TRIPLEX; Pineda et al. 2023, Chung et al. 2024); ``None``: none. Capped in sections of ``k``
spots or fewer (warned, recorded in ``params['spatial_context_capped']``); ``k`` at least the largest section is
an error.""",
        ),
    )
    context_rep: str | Sequence[str] | None = field(
        default=None,
        metadata=_about(
            "context",
            """\
``obsm`` key(s) of embeddings of larger fields of view around the same spots
(``mst.pp.extract_patches(context_sizes_um=...)``, ``mst.tl.embed_patches(..., context_index=k)``), appended as
blocks after the own embedding.""",
        ),
    )
    global_context: bool = field(
        default=False,
        metadata=_about(
            "context", "Append the mean embedding of the spot's section (computed on the section's own features)."
        ),
    )
    scale_per_library: bool = field(
        default=False,
        metadata=_about(
            "fit",
            """\
Standardise every feature within each section (its own spots, never its expression) before the model: removes
section-wide shifts of the embedding (stain, scanner), at the cost of section-wide differences in expression. A
translator stores it and scales each new section by itself.""",
        ),
    )
    alphas: Sequence[float] = field(
        default=DEFAULT_ALPHAS,
        metadata=_about("fit", "Ridge penalties searched by the inner cross-validation (non-empty, finite, positive)."),
    )
    random_state: int = field(default=0, metadata=_about("fit", "Seed; the same seed gives the same result."))

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

    def targets(self, train: np.ndarray, gidx: np.ndarray, test: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        """The target of genes ``gidx``: dense float64 on the ``train`` rows; as stored (CSR if sparse) on ``test``.

        The genes are cut once, then the rows (at 1,000,000 cells a train-row copy of every gene would be several
        times the size of the genes fit). ``None`` for the test rows without ``test``.
        """
        yg = gene_columns(self.inputs.y, gidx)
        return dense_cols(yg, train, np.arange(len(gidx))), (None if test is None else yg[test])


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


class _FromRecipe:
    """Default of a public function's parameter that is a :class:`Recipe` field (see :func:`recipe_parameters`)."""

    def __repr__(self) -> str:
        return "RECIPE"


#: Marks a parameter of a function under :func:`recipe_parameters` as the :class:`Recipe` field placed here.
RECIPE = _FromRecipe()
#: Text of the deprecated ``model=`` keyword that the functions taking ``regressor`` keep.
_MODEL_DOC = "Former name of ``regressor`` (``FutureWarning``)."


def recipe_parameters(*, groups: Sequence[str] = GROUPS, defaults: dict[str, Any] | None = None) -> Callable[[_F], _F]:
    """Decorator: the :class:`Recipe` fields of ``groups`` become keyword parameters of a public function.

    The function declares a keyword-only ``recipe`` parameter. Its public signature (``__signature__``: what
    ``inspect.signature``, IPython and sphinx show) holds, in place of ``recipe``, the fields of ``groups`` in field
    order, each with the field's annotation and default (``defaults``: this function's own, by name). A field placed
    elsewhere, or taken from another group, is declared where it goes with the default :data:`RECIPE`; the function
    receives its checked value there. With ``regressor`` the deprecated ``model=`` keyword comes last
    (``FutureWarning``). The docstring's ``Parameters`` section is rewritten in the order of the signature with each
    field's text; the function's own entry for a field, if any, follows that text (what the seed seeds here).

    A call binds the arguments as Python does (``TypeError`` for an unknown keyword), checks the recipe
    (:meth:`Recipe.check`, ``ValueError`` naming the first bad value) and calls the function with its own
    arguments, the checked values of the placed fields and ``recipe=``.
    """

    def decorator(func: _F) -> _F:
        public, placed, taken = _public_signature(func, groups, defaults or {})
        texts = {f.name: f.metadata["doc"] for f in fields(Recipe) if f.name in taken} | {"model": _MODEL_DOC}
        func.__doc__ = document_parameters(func.__doc__ or "", list(public.parameters), texts, func.__name__)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = public.bind(*args, **kwargs)
            except TypeError as err:
                raise TypeError(f"{func.__name__}() {err}") from None
            bound.apply_defaults()
            own = bound.arguments
            values = {name: own.pop(name) for name in taken}
            if "regressor" in values:
                values["regressor"] = regressor_of(values["regressor"], own.pop("model"), func.__name__)
            recipe = Recipe.check(**values)
            return func(**own, **{name: getattr(recipe, name) for name in placed}, recipe=recipe)

        wrapper.__signature__ = public
        return wrapper  # type: ignore[return-value]

    return decorator


def _public_signature(
    func: Callable, groups: Sequence[str], defaults: dict[str, Any]
) -> tuple[inspect.Signature, list[str], list[str]]:
    """The public signature of ``func`` under :func:`recipe_parameters`; the fields it places; all it takes."""
    sig, by_name = inspect.signature(func), {f.name: f for f in fields(Recipe)}
    placed = [n for n, p in sig.parameters.items() if p.default is RECIPE]
    rest = [f.name for f in fields(Recipe) if f.metadata["group"] in groups and f.name not in placed]
    taken = placed + rest
    bad = [n for n in placed if n not in by_name] + [g for g in groups if g not in GROUPS]
    bad += [n for n in defaults if n not in taken]
    if bad or "recipe" not in sig.parameters:
        msg = f"`{func.__name__}`: declare a keyword-only `recipe`; not Recipe fields, groups or fields taken: {bad}."
        raise TypeError(msg)

    def field_param(name: str, p: inspect.Parameter) -> inspect.Parameter:
        default = defaults.get(name, by_name[name].default)
        return p.replace(name=name, default=default, annotation=by_name[name].type)

    params = []
    for name, p in sig.parameters.items():
        if name == "recipe":
            params += [field_param(n, p) for n in rest]
        else:
            params.append(field_param(name, p) if name in placed else p)
    if "regressor" in taken:
        params.append(inspect.Parameter("model", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="Any"))
    return sig.replace(parameters=params), placed, taken


def regressor_of(regressor: Any, model: Any, where: str) -> Any:
    """``regressor``, or the deprecated ``model=`` keyword when given (``FutureWarning`` naming ``regressor=``)."""
    if model is None:
        return regressor
    import warnings

    warnings.warn(
        f"`{where}(model=...)` is now `regressor=` (the encoder is the `model` of `embed_patches`); `model=` will be "
        "removed in the next release.",
        FutureWarning,
        stacklevel=3,  # the caller of the public function (through the wrapper of recipe_parameters)
    )
    return model


__all__ = ["GROUPS", "RECIPE", "Design", "Recipe", "fit_rows", "recipe_parameters", "regressor_of"]
