"""Shared docstring text, injected with :func:`inject_docs` (the idea of scanpy's ``_doc_params``).

A docstring holds a placeholder such as ``{plot_params}`` on a line of its own (or inline); :func:`inject_docs`
replaces it with the text, indenting every further line of the text like the placeholder's line. Replacement uses
:meth:`str.replace`, not :meth:`str.format`, so other braces in the docstring (``uns[f"{key}_colors"]``) are safe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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


# ---- a Parameters section assembled from shared texts ------------------------------------------------------------


def document_parameters(doc: str, names: Sequence[str], texts: Mapping[str, str], where: str) -> str:
    """``doc`` with its numpydoc ``Parameters`` section rewritten to document ``names``, in that order.

    Each parameter's entry is its shared text ``texts[name]`` (written without indentation) followed by the
    docstring's own entry for it, if any (e.g. what a seed seeds in this function); a parameter without a shared
    text keeps the docstring's entry. Used where a signature is assembled (a translation's recipe fields).

    Raises
    ------
    ValueError
        At import time, when a parameter of ``names`` is documented nowhere, or the docstring documents a name that
        is not a parameter (``where`` names the function).
    """
    lines = doc.split("\n")
    head = next((i for i, line in enumerate(lines) if line.strip() == "Parameters"), None)
    if head is None:
        msg = f"`{where}`: the docstring has no Parameters section."
        raise ValueError(msg)
    indent = lines[head][: len(lines[head]) - len(lines[head].lstrip())]
    end = next(
        (i for i in range(head + 2, len(lines) - 1) if lines[i].strip() and set(lines[i + 1].strip()) == {"-"}),
        len(lines),
    )
    own: dict[str, list[str]] = {}
    current: list[str] = []
    for line in lines[head + 2 : end]:
        if line.strip() and not line.startswith(indent + " "):
            current = own.setdefault(line.strip(), [])
        else:
            current.append(line)
    stale = sorted(set(own) - set(names))
    undocumented = [n for n in names if n not in texts and n not in own]
    if stale or undocumented:
        msg = f"`{where}`: documented but not a parameter: {stale}; a parameter without text: {undocumented}."
        raise ValueError(msg)
    body = []
    for name in names:
        body.append(indent + name)
        if name in texts:
            body += [indent + "    " + t if t.strip() else "" for t in texts[name].split("\n")]
        entry = own.get(name, [])
        while entry and not entry[-1].strip():
            entry = entry[:-1]
        body += entry
    blank = [""] if end < len(lines) else []
    return "\n".join([*lines[: head + 2], *body, *blank, *lines[end:]])


__all__ = [
    "doc_copy",
    "doc_data",
    "doc_image",
    "doc_library_key",
    "doc_random_state",
    "doc_returns_fig",
    "doc_show_return",
    "doc_table_key",
    "document_parameters",
    "inject_docs",
    "plot_docs",
    "plot_params",
]
