"""Deprecated: moved to :mod:`ssmd.models.gradcam` (issue 19: engine/ holds no task code).

Only re-exports, so that existing imports keep working.
"""

from __future__ import annotations

from ssmd.models.gradcam import grad_cam, overlay_heatmap, write_gradcam_overlays

__all__ = ["grad_cam", "overlay_heatmap", "write_gradcam_overlays"]
