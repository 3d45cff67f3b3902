"""Logging in the style of scanpy: ``start = info(...)`` then ``info("finished", time=start)``."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("morphst")
if not logger.handlers:
    _h = logging.StreamHandler()
    _h.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_h)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def info(msg: str, *, time: float | None = None) -> float:
    """Log ``msg``; with ``time`` (a value returned earlier), append the elapsed seconds. Returns now."""
    import time as _t

    now = _t.perf_counter()
    if time is not None:
        msg = f"{msg} ({now - time:.1f}s)"
    logger.info(msg)
    return now


def warning(msg: str) -> None:
    """Log a warning."""
    logger.warning(f"WARNING: {msg}")


__all__ = ["info", "logger", "time", "warning"]
