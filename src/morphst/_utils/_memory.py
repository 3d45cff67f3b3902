"""Hand freed heap memory back to the operating system between the steps of a large analysis."""

from __future__ import annotations


def release_freed_memory() -> None:
    """Return the pages that earlier steps freed but glibc's allocator kept (``malloc_trim(0)``).

    glibc keeps freed memory of large analyses in its arenas (most of all in the worker threads' arenas), so the
    resident set of a long session stays at its high-water mark and the next step's arrays are mapped beside it: the
    step's peak counts them twice. The heavy functions call this on entry, which usually lowers each step's peak (it
    cannot return what is still referenced, such as garbage in reference cycles that no garbage collection has freed
    yet). It changes no result; a no-op where glibc is absent (macOS, Windows, musl).
    """
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
