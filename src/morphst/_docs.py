"""Shared docstring text, injected with :func:`inject_docs` (the idea of scanpy's ``_doc_params``).

A docstring holds a placeholder such as ``{plot_params}`` on a line of its own (or inline); :func:`inject_docs`
replaces it with the text, indenting every further line of the text like the placeholder's line. Replacement uses
:meth:`str.replace`, not :meth:`str.format`, so other braces in the docstring (``uns[f"{key}_colors"]``) are safe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


def inject_docs(**kwargs: str) -> Callable[[_T], _T]:
    """Decorator: replace each ``{name}`` placeholder of the docstring with ``kwargs[name]``.

    Continuation lines of the injected text take the indentation of the line that holds the placeholder, so the
    shared text is written without indentation.

    Raises
    ------
    ValueError
        At import time, if a placeholder is not in the docstring (a typo would otherwise go unnoticed).
    """

    def decorator(obj: _T) -> _T:
        doc = obj.__doc__ or ""
        for name, text in kwargs.items():
            placeholder = "{" + name + "}"
            if placeholder not in doc:
                msg = f"`inject_docs`: no {placeholder} in the docstring of {getattr(obj, '__qualname__', obj)!r}."
                raise ValueError(msg)
            lines = []
            for line in doc.split("\n"):
                if placeholder in line:
                    indent = line[: len(line) - len(line.lstrip())]
                    sub = "\n".join(t if t.strip() else "" for t in text.replace("\n", "\n" + indent).split("\n"))
                    line = line.replace(placeholder, sub)
                lines.append(line)
            doc = "\n".join(lines)
        obj.__doc__ = doc
        return obj

    return decorator


# ---- mst.pl ---------------------------------------------------------------------------------------------------------

#: ``show`` and ``return_fig`` of every ``mst.pl`` function (the convention of :func:`morphst.pl._utils.finish`).
doc_show_return = """\
show
    Show the figure; ``None``: when matplotlib is interactive. Ignored with ``return_fig=True``.
return_fig
    Return the :class:`~matplotlib.figure.Figure`."""

#: Start of the Returns section of every ``mst.pl`` function.
doc_returns_fig = "The figure if ``return_fig``, else ``None``."


# ---- parameters shared by mst.pp / mst.tl / mst.pl --------------------------------------------------------------

#: ``data`` and ``table_key`` of a function that takes an AnnData or a SpatialData.
doc_data = """\
data
    AnnData, or SpatialData whose table ``table_key`` is used.
table_key
    Table of a SpatialData (ignored for an AnnData)."""

#: ``table_key`` of a function that needs a SpatialData (images and shapes, not only the table).
doc_table_key = """\
table_key
    Table annotating the spots/cells."""

#: ``library_key``: the section column (squidpy's name).
doc_library_key = """\
library_key
    ``obs`` column of the section (library, sample) of each spot. ``None``, or the default ``"section"`` when
    there is no such column: all spots form one section."""

#: ``copy`` of an AnnData/SpatialData function that writes into its input.
doc_copy = """\
copy
    Return a modified copy of the table instead of writing into ``data``."""

#: ``random_state`` of a seeded function.
doc_random_state = """\
random_state
    Seed; the same seed gives the same result."""


#: ``image_key`` and ``image_px`` of the ``mst.pl`` maps drawn over the H&E.
doc_image = """\
image_key
    Image to draw under the spots; ``None``: the image the patches were cut from (``uns["patches"]``, written by
    :func:`morphst.pp.extract_patches` and when a translator is applied), else one that shares the spots'
    coordinate system, preferring a name that starts with the section's.
image_px
    Short side (px) of the rendered H&E: the coarsest pyramid level at least this large is read (and cached)."""


def plot_params(*, ax: str = "", figsize: str) -> str:
    """Text of the ``ax``, ``figsize``, ``show`` and ``return_fig`` parameters of an ``mst.pl`` function.

    Parameters
    ----------
    ax
        What ``ax`` must hold, appended to "Axes to draw on" (e.g. ``", one per panel"``); empty: one axes.
    figsize
        The default size of a new figure, after "``None``: " (e.g. ``"about 3.6 inches per panel"``).
    """
    return (
        f"ax\n    Axes to draw on{ax}; ``None``: a new figure.\n"
        f"figsize\n    Size of a new figure (inches); ``None``: {figsize}.\n" + doc_show_return
    )


def plot_docs(*, ax: str = "", figsize: str, image: bool = False, **kwargs: str) -> Callable[[_T], _T]:
    """:func:`inject_docs` for an ``mst.pl`` function.

    Fills ``{plot_params}`` (:func:`plot_params` of ``ax`` and ``figsize``), ``{returns_fig}``, ``{image}`` when
    ``image`` (the maps over the H&E), and the further ``kwargs``.
    """
    if image:
        kwargs["image"] = doc_image
    return inject_docs(plot_params=plot_params(ax=ax, figsize=figsize), returns_fig=doc_returns_fig, **kwargs)


# ---- the translation recipe (mst.tl.predict_expression, fit_translator, learn_translation_features) ---------------

#: ``use_rep``, ``genes`` and ``target``: what a translation maps from and to.
doc_inputs = """\
use_rep
    ``obsm`` key of the patch embeddings, ``(n_obs, n_features)``.
genes
    Target genes: a boolean ``var`` column or a list of names. A column written by :func:`morphst.pp.select_genes`
    (or the default ``"morph_target"`` not yet computed: 50 highly variable genes by Pearson residuals) is
    re-selected on each training set with its stored rule (:class:`morphst.pp.GeneSelection`) when
    ``select_on_train``; another boolean column is used as it is.
target
    What to predict: ``"log1p_cp10k"`` (log1p of counts per 10,000; the layer if present, else computed from the
    raw counts in ``X``), a layer name, or ``"X"``."""

#: ``regressor`` of a translation.
doc_regressor = """\
regressor
    ``"ridge"`` (standardise, PCA to at most 256 components, :class:`~sklearn.linear_model.RidgeCV` with the
    penalty from an inner cross-validation grouped by ``library_key`` on the training set: the HEST-Benchmark
    linear probe), ``"mlp"`` (the same, then one hidden layer of 256 units with early stopping), ``"head"``
    (:class:`~morphst.tl.FeatureHead`, one token per input block, early-stopped on a held-out training section;
    pass a ``FeatureHead(...)`` to set its options), or any scikit-learn regressor (cloned per fit).
model
    Former name of ``regressor`` (``FutureWarning``)."""

#: ``select_on_train`` of a translation.
doc_select_on_train = """\
select_on_train
    Re-select the target genes on the training spots (no test statistic enters the gene choice)."""

#: ``spatial_context``, ``context_rep`` and ``global_context``: the input blocks of a translation.
doc_context = """\
spatial_context
    Number ``k`` of spatial neighbours (``obsm['spatial']``, same section, sparse kNN) whose mean embedding is
    appended (SEPAL / TRIPLEX; Pineda et al. 2023, Chung et al. 2024); ``None``: none. Capped in sections of ``k``
    spots or fewer (warned, recorded in ``params['spatial_context_capped']``); ``k`` at least the largest section
    is an error.
context_rep
    ``obsm`` key(s) of embeddings of larger fields of view around the same spots
    (``mst.pp.extract_patches(context_sizes_um=...)``, ``mst.tl.embed_patches(..., context_index=k)``), appended
    as blocks after the own embedding.
global_context
    Append the mean embedding of the spot's section (computed on the section's own features)."""

#: ``scale_per_library`` of a translation.
doc_scale_per_library = """\
scale_per_library
    Standardise every feature within each section (its own spots, never its expression) before the model: removes
    section-wide shifts of the embedding (stain, scanner), at the cost of section-wide differences in expression.
    A translator stores it and scales each new section by itself."""

#: ``alphas`` of a translation.
doc_alphas = """\
alphas
    Ridge penalties searched by the inner cross-validation (non-empty, finite, positive)."""

#: ``library_key`` of a translation (a misspelt column is an error there).
doc_recipe_library_key = """\
library_key
    ``obs`` column of the section of each spot: the groups of the inner cross-validation, of spatial neighbours,
    of section tokens and of per-section scaling. ``None``, or the default ``"section"`` when there is no such
    column: all spots form one section; any other name that is not a column is a ``KeyError``."""


def recipe_docs(*names: str) -> dict[str, str]:
    """The texts of the translation recipe's parameters, by placeholder name (``"inputs"``, ``"regressor"``, ...)."""
    texts = {
        "inputs": doc_inputs,
        "regressor": doc_regressor,
        "library_key": doc_recipe_library_key,
        "select_on_train": doc_select_on_train,
        "context": doc_context,
        "scale_per_library": doc_scale_per_library,
        "alphas": doc_alphas,
    }
    return {n: texts[n] for n in names}


__all__ = [
    "doc_alphas",
    "doc_context",
    "doc_copy",
    "doc_data",
    "doc_image",
    "doc_inputs",
    "doc_library_key",
    "doc_random_state",
    "doc_recipe_library_key",
    "doc_regressor",
    "doc_returns_fig",
    "doc_scale_per_library",
    "doc_select_on_train",
    "doc_show_return",
    "doc_table_key",
    "inject_docs",
    "plot_docs",
    "plot_params",
    "recipe_docs",
]
