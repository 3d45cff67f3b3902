"""morphst.pl."""

__all__: list[str] = []
