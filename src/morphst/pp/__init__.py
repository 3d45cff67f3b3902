"""morphst.pp."""

__all__: list[str] = []
