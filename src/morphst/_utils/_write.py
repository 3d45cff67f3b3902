"""Write results and say what was added where: the one writer of morphst (as squidpy's ``_save_data``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import _logging as logg


def slot_text(attr: str, key: str, value: Any = None) -> str:
    """How a slot is named in a log line: ``.obsm['X_fused'] (100, 30)`` (the shape of an array value)."""
    shape = getattr(value, "shape", None)
    size = f" {tuple(int(n) for n in shape)}" if shape is not None and len(shape) >= 2 and attr != "uns" else ""
    return f"`.{attr}[{key!r}]`{size}"


def save_results(
    data,
    added: Sequence[tuple[str, str, Any]],
    *,
    copy: bool = False,
    start: float | None = None,
    summary: str = "",
    written: Sequence[tuple[str, str]] = (),
):
    """Write ``added`` into ``data`` (a copy when ``copy``), then log one line that names every slot.

    Call it once, after everything is computed and checked, so that a failed call leaves ``data`` as it was.

    Parameters
    ----------
    data
        An AnnData (``obs``, ``obsm``, ``var``, ``varm``, ``layers``, ``obsp``, ``uns``) or a SpatialData
        (``shapes``, ``tables``, ...).
    added
        ``(attribute, key, value)``: ``getattr(data, attribute)[key] = value``, in this order.
    copy
        Write into ``data.copy()`` and return it; else write in place and return ``None``.
    start
        The time returned by the ``logg.info`` that started the work (the line ends with the elapsed seconds).
    summary
        What was found, said before the slots (e.g. ``"found 7 domains"``).
    written
        ``(attribute, key)`` of slots the caller has already written (listed after ``added``).

    Returns
    -------
    The copy when ``copy``, else ``None``. Logs ``"    finished: <summary>; added `.obsm['key']` (n, d), ..."``.
    """
    if copy:
        data = data.copy()
    for attr, key, value in added:
        getattr(data, attr)[key] = value
    slots = [slot_text(a, k, v) for a, k, v in added] + [slot_text(a, k) for a, k in written]
    head = f"{summary}; added " if summary else "added "
    logg.info(f"    finished: {head}{', '.join(slots)}", time=start)
    return data if copy else None


__all__ = ["save_results", "slot_text"]
