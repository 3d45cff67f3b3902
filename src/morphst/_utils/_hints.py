"""What to run first: the one wording of the hints that end an error about a missing input."""

from __future__ import annotations

from .._constants import Key


def run_first(function: str, args: str | None = "adata, ...", *, key: str | None = None) -> str:
    """``"run `mst.<function>(<args>, key_added=<key>)` first"`` (``args=None``: the function's name alone).

    ``function`` is the path below ``mst``, e.g. ``"tl.quadrants"``; a name with a dot elsewhere (``"sc.pp.pca"``)
    is taken as it is. The clause starts in lower case: it ends a sentence (``f"... missing: {run_first(...)}."``);
    :func:`rep_hint` gives whole sentences.
    """
    name = function if function.startswith(("sc.", "sq.", "mst.")) else f"mst.{function}"
    if args is None:
        return f"run `{name}` first"
    parts = [args] if args else []
    if key is not None:
        parts.append(f"key_added={key!r}")
    return f"run `{name}({', '.join(parts)})` first"


def rep_hint(key: str) -> str:
    """What to run to get the representation ``obsm[key]``, as a sentence (for ``check_obsm(..., hint=)``).

    ``"X_pca"``: :func:`scanpy.pp.pca`; ``"X_fused..."``: :func:`morphst.tl.fuse`; any other key: the patch
    embeddings (``X_<model>`` of :func:`morphst.tl.embed_patches`, after :func:`morphst.pp.extract_patches`).
    """
    if key == "X_pca":
        return "Run `sc.pp.pca` (on log-normalised expression) first."
    if key.startswith(Key.FUSED):
        return f"Run `mst.tl.fuse` first (it writes `obsm[{Key.FUSED!r}]`, or `obsm[key_added]`)."
    if key.startswith("X_") and len(key) > 2:
        call, writes = f"embed_patches(sdata, model={key[2:]!r})", f"`obsm[{key!r}]`"
    else:
        call, writes = "embed_patches(sdata, model=...)", "`obsm['X_<model>']`"
    return (
        f"Run `mst.pp.extract_patches` then `mst.tl.{call}` first (it writes {writes}), or the function that "
        f"writes {key!r}."
    )


__all__ = ["rep_hint", "run_first"]
