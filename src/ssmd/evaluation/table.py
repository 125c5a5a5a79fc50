"""Plain-text tables of metric dicts, for the CLI and logs."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["format_metrics_table"]


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    v = float(value)
    if math.isnan(v):
        return "nan"
    if v.is_integer() and abs(v) >= 10:
        return str(int(v))  # e.g. max_dets = 1000.0
    return f"{v:.{digits}f}"


def format_metrics_table(
    metrics: Mapping[str, Any], *, digits: int = 4, title: str | None = None
) -> str:
    """A two-column markdown table ``| metric | value |`` of ``metrics``, in dict order.

    Floats get ``digits`` decimals (whole numbers >= 10, such as ``max_dets``, print as
    integers); other values print with ``str``. ``-1`` (pycocotools' "undefined") is
    printed as is.

    Args:
        metrics: e.g. the dict of :func:`ssmd.evaluation.coco_ap` or ``FROCResult.to_dict()``.
        digits: decimals for floats.
        title: optional line printed above the table.
    """
    rows = [(str(k), _fmt(v, digits)) for k, v in metrics.items()]
    kw = max([len("metric"), *(len(k) for k, _ in rows)])
    vw = max([len("value"), *(len(v) for _, v in rows)])
    lines = [] if title is None else [title, ""]
    lines.append(f"| {'metric':<{kw}} | {'value':>{vw}} |")
    lines.append(f"|{'-' * (kw + 2)}|{'-' * (vw + 1)}:|")
    lines.extend(f"| {k:<{kw}} | {v:>{vw}} |" for k, v in rows)
    return "\n".join(lines)
