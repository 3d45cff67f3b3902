"""morphst.pl."""

from ._quadrants import quadrants

__all__: list[str] = ["quadrants"]
