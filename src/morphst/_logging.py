"""Logging in the style of scanpy: ``start = info(...)`` then ``info("    finished: ...", time=start)``.

Progress and "finished" lines go to the ``morphst`` logger (level set by ``mst.settings.verbosity``). It propagates
to the root logger, so ``logging`` configuration and pytest's ``caplog`` see it; its own stderr handler stays quiet
while the root logger has handlers, so nothing is printed twice. Warnings that a user must act on (results may be
wrong, a choice was made for them) are :func:`warnings.warn` ``UserWarning``s pointing at the user's line.
"""

from __future__ import annotations

import logging
import os
import time
import warnings

logger = logging.getLogger("morphst")


class _QuietIfRootHandles(logging.StreamHandler):
    """stderr handler that steps aside when the root logger has handlers (the record propagates to them)."""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        super().emit(record)


if not any(isinstance(h, _QuietIfRootHandles) for h in logger.handlers):
    _h = _QuietIfRootHandles()
    _h.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_h)
logger.setLevel(logging.INFO)
logger.propagate = True

#: ``mst.settings.verbosity`` -> logging level.
VERBOSITY_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}


def info(msg: str, *, time: float | None = None) -> float:
    """Log ``msg``; with ``time`` (a value returned earlier), append the elapsed seconds. Returns now."""
    import time as _t

    now = _t.perf_counter()
    if time is not None:
        msg = f"{msg} ({now - time:.1f}s)"
    logger.info(msg)
    return now


def debug(msg: str) -> None:
    """Log ``msg`` at debug level (``mst.settings.verbosity = 3``)."""
    logger.debug(msg)


def _user_stacklevel() -> int:
    """``stacklevel`` for :func:`warnings.warn` that points at the first frame outside morphst (as pandas does)."""
    import inspect

    pkg = os.path.dirname(__file__)
    frame = inspect.currentframe()
    level = 0
    while frame is not None:
        if not frame.f_code.co_filename.startswith(pkg):
            break
        frame = frame.f_back
        level += 1
    return max(level, 1)


def warning(msg: str) -> None:
    """A warning the user must act on: :func:`warnings.warn` (``UserWarning``) at the caller's line in user code."""
    warnings.warn(msg, UserWarning, stacklevel=_user_stacklevel())


__all__ = ["VERBOSITY_LEVELS", "debug", "info", "logger", "time", "warning"]
