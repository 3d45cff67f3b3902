"""Shared plumbing of ``mst.pl``: reading what ``mst.tl`` wrote, making axes, and the show/return convention.

Every ``mst.pl`` function takes keyword-only ``ax=None, figsize=None, show=None, return_fig=False`` and:

1. reads only what a ``mst.tl`` function wrote, through :func:`get_tl_result` (a missing result raises a
   ``KeyError`` that names the ``mst.tl`` function to run);
2. draws on ``ax`` when given, else on a new figure of ``figsize`` (:func:`make_axes`);
3. ends with ``return finish(fig, show=show, return_fig=return_fig)``.

The show/return rule follows scanpy: ``return_fig=True`` returns the :class:`~matplotlib.figure.Figure` (and does
not show it); otherwise the function returns ``None`` and calls :func:`matplotlib.pyplot.show` when ``show`` is
``True``, or when ``show`` is ``None`` and matplotlib is in interactive mode (e.g. Jupyter, ``plt.ion()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._utils import list_keys
from .._utils._hints import run_first

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def get_tl_result(adata: AnnData, key: str, tl_function: str, *, required: Sequence[str] = ()) -> dict[str, Any]:
    """Return ``adata.uns[key]`` written by ``tl_function``, or raise an error that says what to run.

    Parameters
    ----------
    adata
        The AnnData to read from.
    key
        ``uns`` key of the result.
    tl_function
        Name of the ``mst.tl`` function that writes it, e.g. ``"quadrants"`` (used in the message).
    required
        Entries that the result must hold.

    Raises
    ------
    KeyError
        If ``uns[key]`` is missing or lacks a ``required`` entry.
    """
    res = adata.uns.get(key)
    if not isinstance(res, dict):
        msg = (
            f"`adata.uns[{key!r}]` not found: {run_first(f'tl.{tl_function}', key=key)}. "
            f"Available uns keys: {list_keys(adata.uns.keys())}."
        )
        raise KeyError(msg)
    missing = [r for r in required if r not in res]
    if missing:
        msg = (
            f"`adata.uns[{key!r}]` lacks {missing}: it was not written by `mst.tl.{tl_function}`; "
            f"rerun `mst.tl.{tl_function}(adata, ..., key_added={key!r})`."
        )
        raise KeyError(msg)
    return res


def make_axes(
    ax: Axes | Sequence[Axes] | None,
    n: int = 1,
    *,
    figsize: tuple[float, float] | None = None,
    panel_size: tuple[float, float] = (4.5, 4.0),
    sharex: bool = False,
    sharey: bool = False,
) -> tuple[Figure, list[Axes]]:
    """Return ``(figure, list of n axes)``: the given ``ax`` (one, or a sequence of ``n``) or a new 1 × n figure.

    Raises
    ------
    ValueError
        If ``ax`` does not hold ``n`` axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        figsize = figsize if figsize is not None else (panel_size[0] * n, panel_size[1])
        fig, axs = plt.subplots(1, n, figsize=figsize, sharex=sharex, sharey=sharey, squeeze=False)
        return fig, list(axs.ravel())
    axs = list(np.ravel(np.asarray(ax, dtype=object))) if isinstance(ax, Sequence | np.ndarray) else [ax]
    if len(axs) != n:
        msg = f"This plot needs {n} axes; `ax` holds {len(axs)}. Pass {n} axes or `ax=None`."
        raise ValueError(msg)
    return axs[0].figure, axs


def gene_list(genes: str | Sequence[str]) -> list[str]:
    """``genes`` (one name or several) as a list of names.

    Raises
    ------
    ValueError
        If ``genes`` is empty.
    """
    genes = [genes] if isinstance(genes, str) else [str(g) for g in genes]
    if not genes:
        msg = "`genes` is empty; pass one or more predicted genes."
        raise ValueError(msg)
    return genes


def finish(fig: Figure, *, show: bool | None, return_fig: bool) -> Figure | None:
    """Return ``fig`` when ``return_fig``; else show it if ``show`` (``None``: in interactive mode) and return None."""
    import matplotlib
    import matplotlib.pyplot as plt

    if return_fig:
        return fig
    if show is None:
        show = matplotlib.is_interactive()
    if show:
        plt.show()
    return None


__all__ = ["finish", "gene_list", "get_tl_result", "make_axes"]
