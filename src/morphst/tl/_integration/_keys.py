"""Helpers shared by the integration modules: the representation hint (from ``morphst._utils._hints``)."""

from __future__ import annotations

from ..._utils._hints import rep_hint

__all__ = ["rep_hint"]
