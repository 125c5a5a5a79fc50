"""Figures for evaluation results: FROC curves and metric-vs-labeled-ratio curves.

Figures are drawn on a ``matplotlib.figure.Figure`` with the Agg canvas directly, so
importing this module never changes matplotlib's global backend and it works headless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ssmd.evaluation.froc import FROCResult, interpolate_sensitivity

__all__ = ["plot_curves", "plot_froc"]

CurveSeries = tuple[Sequence[float], Sequence[float], Sequence[float] | None]
"""``(x, y, yerr)`` of one method; ``yerr`` (e.g. the std over seeds) may be ``None``."""


def _rate_label(rate: float) -> str:
    if rate < 1 and float(1 / rate).is_integer():
        return f"1/{int(1 / rate)}"
    return f"{rate:g}"


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=dpi, format="png")
    return out


def plot_froc(
    results: Mapping[str, FROCResult] | FROCResult,
    path: str | Path,
    *,
    title: str = "FROC",
    dpi: int = 150,
) -> Path:
    """Plot one or more FROC curves to a PNG.

    The x axis is log2 over the evaluation FP rates (the curve is drawn with the same
    ``np.interp`` interpolation that produced the numbers, so the markers at the rates
    lie on it); the legend carries each curve's CPM.

    Args:
        results: one result, or ``{method name: result}``.
        path: where to write the PNG (parent folders are created).
        title: figure title.
        dpi: resolution.

    Returns:
        ``path`` as a ``Path``.
    """
    named: Mapping[str, FROCResult] = {"": results} if isinstance(results, FROCResult) else results
    if not named:
        raise ValueError("plot_froc needs at least one FROC result")
    rates = sorted({r for res in named.values() for r in res.sensitivities})
    lo, hi = rates[0] / 1.5, rates[-1] * 1.5
    grid = np.exp2(np.linspace(np.log2(lo), np.log2(hi), 400))

    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for name, res in named.items():
        curve = interpolate_sensitivity(res.fps_per_image, res.sensitivity, grid)
        label = f"{name} (CPM {res.cpm:.3f})" if name else f"CPM {res.cpm:.3f}"
        (line,) = ax.plot(grid, curve, linewidth=1.6, label=label)
        xs = list(res.sensitivities)
        ax.plot(xs, [res.sensitivities[x] for x in xs], "o", color=line.get_color(), markersize=5)
    ax.set_xscale("log", base=2)
    ax.set_xlim(lo, hi)
    ax.set_xticks(rates)
    ax.set_xticklabels([_rate_label(r) for r in rates])
    ax.minorticks_off()
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("average false positives per image")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_curves(
    series: Mapping[str, CurveSeries],
    path: str | Path,
    *,
    xlabel: str = "labeled fraction",
    ylabel: str = "AP",
    title: str | None = None,
    logx: bool = False,
    percent_x: bool = False,
    dpi: int = 150,
) -> Path:
    """Plot ``y`` against ``x`` with error bars, one line per method (e.g. AP vs labeled ratio).

    Args:
        series: ``{method: (x, y, yerr)}``; ``yerr`` may be ``None``.
        path: where to write the PNG.
        xlabel: x-axis label.
        ylabel: y-axis label.
        title: optional title.
        logx: log2 x axis (labeled ratios 1%, 2%, 5%, ... read better that way).
        percent_x: show x tick labels as percentages (0.05 -> "5%").
        dpi: resolution.

    Returns:
        ``path`` as a ``Path``.
    """
    if not series:
        raise ValueError("plot_curves needs at least one series")
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    xs_all: set[float] = set()
    for name, (x, y, yerr) in series.items():
        if len(x) != len(y) or (yerr is not None and len(yerr) != len(y)):
            raise ValueError(f"series {name!r}: x, y and yerr must have the same length")
        xs_all.update(float(v) for v in x)
        ax.errorbar(
            list(x),
            list(y),
            yerr=None if yerr is None else list(yerr),
            marker="o",
            capsize=3,
            label=name,
        )
    if logx:
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ticks = sorted(xs_all)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{100 * t:g}%" if percent_x else f"{t:g}" for t in ticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    return _save(fig, path, dpi)
