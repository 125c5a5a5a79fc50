"""Training methods: one small file per method on the shared engine."""

from __future__ import annotations

from ssmd.methods import csd as _csd  # noqa: F401  (registers "csd")
from ssmd.methods import focalmix as _focalmix  # noqa: F401  (registers "focalmix")
from ssmd.methods import mil as _mil  # noqa: F401  (registers "mil")
from ssmd.methods import mil_teacher as _mil_teacher  # noqa: F401  (registers "mil_teacher")
from ssmd.methods import online_teacher as _online_teacher  # noqa: F401  (registers "online_teacher")
from ssmd.methods import pseudo_label as _pseudo_label  # noqa: F401  (registers "pseudo_label")
from ssmd.methods import slice_labels as _slice_labels  # noqa: F401  (registers "label_propagation")
from ssmd.methods import ssmd as _ssmd  # noqa: F401  (registers "ssmd")
from ssmd.methods import supervised as _supervised  # noqa: F401  (registers "supervised")
from ssmd.methods.base import METHODS, Method, build_method

__all__ = ["METHODS", "Method", "build_method"]
