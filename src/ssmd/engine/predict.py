"""Deprecated: moved to :mod:`ssmd.models.predict` (issue 19: engine/ holds no task code).

Only re-exports, so that existing imports keep working.
"""

from __future__ import annotations

from ssmd.models.predict import predict_samples

__all__ = ["predict_samples"]
