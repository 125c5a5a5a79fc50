"""Deprecated: moved to :mod:`ssmd.evaluation.visualize` (issue 19: engine/ holds no task code).

Only re-exports, so that existing imports keep working.
"""

from __future__ import annotations

from ssmd.evaluation.visualize import draw_overlay

__all__ = ["draw_overlay"]
