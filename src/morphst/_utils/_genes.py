"""Checks on gene names shared by every function that names genes (pp, tl, pl)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["check_gene_list", "check_unique_var_names"]


def check_unique_var_names(adata: AnnData, where: str = "") -> None:
    """Raise a :class:`ValueError` if ``adata.var_names`` has duplicates.

    Genes are looked up by name (lists of genes, ``var`` columns, per-gene metrics), and a duplicated name makes
    such a lookup ambiguous: a shape mismatch, a pandas error, or more columns than genes asked for. Called before
    anything is computed or written.

    Parameters
    ----------
    adata
        The AnnData whose ``var_names`` are checked.
    where
        The calling function, for the message (e.g. ``"mst.pp.select_genes"``).

    Raises
    ------
    ValueError
        Naming how many names are duplicated, a few of them, and the fix ``adata.var_names_make_unique()``.
    """
    names = adata.var_names
    if names.is_unique:
        return
    dup = names[names.duplicated(keep="first")].unique()
    shown = [str(g) for g in dup[:5]]
    more = f" and {len(dup) - 5} more" if len(dup) > 5 else ""
    msg = (
        f"{'`' + where + '`: ' if where else ''}`adata.var_names` has {len(dup)} duplicated gene name(s) "
        f"({shown}{more}), so genes cannot be named unambiguously. Run `adata.var_names_make_unique()` first "
        "(it appends '-1', '-2', ... to repeats), or aggregate the duplicated genes."
    )
    raise ValueError(msg)


def check_gene_list(adata: AnnData, genes, name: str) -> list[str]:
    """``genes`` as a list of names, each in ``adata.var_names``.

    Raises
    ------
    KeyError
        Naming how many genes are missing and the first ten.
    ValueError
        If the list is empty; ``name`` is the caller's parameter.
    """
    names = [str(g) for g in genes]
    missing = [g for g in names if g not in adata.var_names]
    if missing:
        msg = f"{len(missing)} gene(s) not in `adata.var_names`: {missing[:10]}."
        raise KeyError(msg)
    if not names:
        msg = f"`{name}` is an empty list of genes; pass at least one gene name."
        raise ValueError(msg)
    return names
