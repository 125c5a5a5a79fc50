"""The experiment's report, rewritten from whatever cells have finished.

``results.csv`` (one row per finished cell), ``table.md`` (Table 1's layout per metric: mean
+- std over seeds, the best of the ranked methods in bold with its gain over the second best,
and the p-value between the two, paired by seed, with the test named; with ``baseline`` set, a
second table per metric gives every ranked row's difference to the baseline row and its
p-value, the question a semi-supervised user asks first), ``summary.json`` and
``plot_<metric>.png`` (the main metric against the labeled ratio, one line per method). Each
cell's initialisation (``init`` in ``result.json``) goes into ``results.csv``; when a row
starts from pretrained weights, ``table.md`` gets an *Init* column saying which.
"""

from __future__ import annotations

import csv
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

from ssmd.evaluation.statistics import compare, mean_std
from ssmd.experiments.claims import write_atomic
from ssmd.experiments.spec import TEST_NAMES, Experiment, MethodSpec, slugify

__all__ = ["collect_results", "format_table", "summarize", "write_report"]


def collect_results(exp: Experiment) -> list[dict[str, Any]]:
    """``result.json`` of every finished cell, in grid order."""
    rows = []
    for cell in exp.cells():
        path = exp.run_dir(cell) / "result.json"
        if path.is_file():
            rows.append(json.loads(path.read_text()))
    return rows


def _values(rows: list[dict[str, Any]], label: str, ratio: float, metric: str) -> dict[int, float]:
    out = {}
    for r in rows:
        v = r["test"].get(metric)
        ok = isinstance(v, int | float) and math.isfinite(float(v))
        if ok and r["label"] == label and float(r["ratio"]) == ratio:
            out[int(r["seed"])] = float(v)
    return out


def _versus(a: dict[str, Any], b: dict[str, Any], test: str, scale: float) -> dict[str, Any]:
    """Row ``a`` against row ``b`` on the seeds both have: the mean paired difference (x
    ``scale``) and, from 2 such seeds on, the p-value. ``{}`` without a common seed."""
    seeds = sorted(set(a["by_seed"]) & set(b["by_seed"]))
    if not seeds:
        return {}
    xa = [a["by_seed"][s] for s in seeds]
    xb = [b["by_seed"][s] for s in seeds]
    out: dict[str, Any] = {
        "diff": scale * sum(x - y for x, y in zip(xa, xb, strict=True)) / len(seeds),
        "paired_seeds": seeds,
    }
    if len(seeds) >= 2:
        out["p_value"] = compare(xa, xb, test=test)["p_value"]  # type: ignore[arg-type]
    return out


def summarize(exp: Experiment, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric and ratio: mean/std/n per row, the best ranked row, its gain and the p-value."""
    scale = 100.0 if exp.percent else 1.0
    ratios = sorted(set(exp.ratios))
    out: dict[str, Any] = {"test": exp.test, "percent": exp.percent, "metrics": {}}
    for metric in exp.metrics:
        per_ratio: dict[str, Any] = {}
        for ratio in sorted({r for m in exp.methods for r in (m.ratios or exp.ratios)}):
            cells: dict[str, Any] = {}
            for m in exp.methods:
                vals = _values(rows, m.label, ratio, metric)
                if vals:
                    mean, std = mean_std([v * scale for v in vals.values()])
                    cells[m.label] = {"mean": mean, "std": std, "n": len(vals), "by_seed": vals}
            ranked = sorted(
                (
                    lab
                    for lab in cells
                    if not next(m for m in exp.methods if m.label == lab).reference
                ),
                key=lambda lab: cells[lab]["mean"],
                reverse=True,
            )
            entry: dict[str, Any] = {"cells": cells}
            if ratio in ratios and len(ranked) >= 1:
                entry["best"] = ranked[0]
            if ratio in ratios and len(ranked) >= 2:
                a, b = ranked[0], ranked[1]
                entry["second"] = b
                entry["gain"] = cells[a]["mean"] - cells[b]["mean"]
                top_two = _versus(cells[a], cells[b], exp.test, scale)
                if "p_value" in top_two:
                    entry["p_value"] = top_two["p_value"]
                    entry["paired_seeds"] = top_two["paired_seeds"]
            if ratio in ratios and exp.baseline in cells:
                versus = {
                    lab: _versus(cells[lab], cells[exp.baseline], exp.test, scale)
                    for lab in ranked
                    if lab != exp.baseline
                }
                entry["vs_baseline"] = {lab: v for lab, v in versus.items() if v}
            per_ratio[f"{ratio:g}"] = entry
        out["metrics"][metric] = per_ratio
    return out


def _pct(r: float) -> str:
    return f"{100 * r:g}%"


def _cell_text(cell: dict[str, Any], digits: int, n_seeds: int) -> str:
    """``mean ± std``; a single seed has no spread, so it shows the value alone with ``(n=1)``."""
    if cell["n"] < 2:
        text = f"{cell['mean']:.{digits}f}"
    else:
        text = f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"
    if cell["n"] < n_seeds:
        text += f" (n={cell['n']})"
    return text


def format_table(
    exp: Experiment,
    summary: dict[str, Any],
    metric: str,
    inits: dict[str, str] | None = None,
) -> str:
    """Table 1's layout for ``metric`` (markdown); ``inits`` (row label -> initialisation), when
    some row is not ``scratch``, adds an *Init* column."""
    digits = 1 if exp.percent else 3
    ratios = sorted(set(exp.ratios))
    per_ratio = summary["metrics"][metric]
    unit = " (x100)" if exp.percent else ""
    shown = inits if inits and any(v != "scratch" for v in inits.values()) else None

    def label(m: MethodSpec) -> str:
        return f"{m.label} | {shown.get(m.label, 'scratch')}" if shown else m.label

    lines = [f"### {metric}{unit}", ""]
    lines.append(
        "| Method | " + ("Init | " if shown else "") + " | ".join(_pct(r) for r in ratios) + " |"
    )
    lines.append("|---|" + ("---|" if shown else "") + "---:|" * len(ratios))
    for m in exp.methods:
        if m.ratios is not None and not set(m.ratios) & set(ratios):
            continue  # reference rows at other ratios go below
        row = []
        for r in ratios:
            entry = per_ratio.get(f"{r:g}", {})
            cell = entry.get("cells", {}).get(m.label)
            if cell is None:
                row.append("—")
                continue
            text = _cell_text(cell, digits, len(exp.seeds))
            if entry.get("best") == m.label:
                text = f"**{text}**"
                if "gain" in entry:
                    text += f" +{entry['gain']:.{digits}f}"
            row.append(text)
        lines.append(f"| {label(m)} | " + " | ".join(row) + " |")
    for m in exp.methods:
        if m.ratios is None or set(m.ratios) & set(ratios):
            continue
        parts = []
        for r in m.ratios:
            cell = per_ratio.get(f"{r:g}", {}).get("cells", {}).get(m.label)
            if cell is not None:
                parts.append(f"{_cell_text(cell, digits, len(exp.seeds))} at {_pct(r)} labels")
        first = "; ".join(parts) if parts else "—"
        lines.append(f"| {label(m)} | {first} |" + " |" * (len(ratios) - 1))
    pvals = []
    for r in ratios:
        entry = per_ratio.get(f"{r:g}", {})
        if "p_value" in entry:
            pvals.append(f"{entry['p_value']:.4f}")
        elif "second" in entry:
            pvals.append("n/a (< 2 paired seeds)")
        else:
            pvals.append("—")
    lines.append(
        "| *p*-value (best vs second) | " + ("| " if shown else "") + " | ".join(pvals) + " |"
    )
    lines.append("")
    pairs = [
        f"{_pct(r)}: {per_ratio[f'{r:g}']['best']} vs {per_ratio[f'{r:g}']['second']}"
        for r in ratios
        if "second" in per_ratio.get(f"{r:g}", {})
    ]
    lines.append(
        f"Mean ± sample std over seeds {exp.seeds}; bold: best ranked method, with its gain over "
        f"the second best; *p*-values: {TEST_NAMES[exp.test]} (scipy) between the two"
        + (f" ({'; '.join(pairs)})" if pairs else "")
        + "."
    )
    if exp.baseline is not None and any("vs_baseline" in e for e in per_ratio.values()):
        lines += ["", *_baseline_table(exp, per_ratio, metric, digits, ratios)]
    return "\n".join(lines)


def _baseline_table(
    exp: Experiment, per_ratio: dict[str, Any], metric: str, digits: int, ratios: list[float]
) -> list[str]:
    """Every ranked row's difference to ``exp.baseline`` and its p-value, per ratio."""
    unit = " (x100)" if exp.percent else ""
    lines = [
        f"{metric}{unit} difference to {exp.baseline}:",
        "",
        "| Method | " + " | ".join(_pct(r) for r in ratios) + " |",
        "|---|" + "---:|" * len(ratios),
    ]
    for m in exp.methods:
        if m.reference or m.label == exp.baseline:
            continue
        row = []
        for r in ratios:
            vs = per_ratio.get(f"{r:g}", {}).get("vs_baseline", {}).get(m.label)
            if vs is None:
                row.append("—")
                continue
            n = len(vs["paired_seeds"])
            p = f"p = {vs['p_value']:.4f}" if "p_value" in vs else "p n/a"
            note = f", n={n}" if n < len(exp.seeds) else ""
            row.append(f"{vs['diff']:+.{digits}f} ({p}{note})")
        lines.append(f"| {m.label} | " + " | ".join(row) + " |")
    lines += [
        "",
        f"Mean difference over the seeds both rows have (n: their number where fewer than "
        f"{len(exp.seeds)}), so it may differ from the difference of the means above; "
        f"*p*-value: {TEST_NAMES[exp.test]} (scipy) on those seeds (none below 2).",
    ]
    return lines


def write_report(exp: Experiment) -> dict[str, Any]:
    """Write ``results.csv``, ``table.md``, ``summary.json`` and ``plot_<metric>.png``.

    They cover :meth:`Experiment.report_view`: all finished cells of the file, not just the
    rows / seeds / ratios this call's ``exp`` was restricted to.
    """
    exp = exp.report_view()
    exp.output_dir.mkdir(parents=True, exist_ok=True)
    rows = collect_results(exp)
    metric_keys = list(exp.metrics)
    for r in rows:
        metric_keys += [k for k in r["test"] if k not in metric_keys]
    header = ["cell", "label", "method", "ratio", "seed", *metric_keys, "train_seconds", "run_dir"]
    header.append("init")
    tmp = exp.output_dir / f".results.csv.{uuid.uuid4().hex}.tmp"
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for r in rows:
            writer.writerow(
                [r["cell"], r["label"], r["method"], r["ratio"], r["seed"]]
                + [r["test"].get(k, "") for k in metric_keys]
                + [r.get("train_seconds", ""), r.get("run_dir", ""), r.get("init", "scratch")]
            )
    os.replace(tmp, exp.output_dir / "results.csv")
    summary = summarize(exp, rows)
    done = len(rows)
    total = len(exp.cells())
    head = [f"# {exp.name}", ""]
    if exp.description:
        head += [exp.description.strip(), ""]
    head += [
        f"Experiment file: `{exp.source}`; base config: `{exp.base_config}`; "
        f"overrides: `{' '.join(exp.overrides) or '(none)'}`.",
        f"Finished cells: {done}/{total}.",
        "",
    ]
    inits = {m.label: exp.row_init(m) for m in exp.methods}
    body = [format_table(exp, summary, m, inits) for m in exp.metrics]
    write_atomic(exp.output_dir / "table.md", "\n".join(head) + "\n" + "\n\n".join(body) + "\n")
    write_atomic(exp.output_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    if rows:
        _plot(exp, summary, exp.metrics[0])
    return summary


def _plot(exp: Experiment, summary: dict[str, Any], metric: str) -> Path | None:
    from ssmd.evaluation.plots import plot_curves

    series: dict[str, Any] = {}
    per_ratio = summary["metrics"][metric]
    for m in exp.methods:
        xs, ys, es = [], [], []
        for key in sorted(per_ratio, key=float):
            cell = per_ratio[key]["cells"].get(m.label)
            if cell is not None:
                xs.append(float(key))
                ys.append(cell["mean"])
                es.append(cell["std"])
        if xs:
            series[m.label] = (xs, ys, es)
    if not series:
        return None
    path = exp.output_dir / f"plot_{slugify(metric)}.png"
    return plot_curves(
        series,
        path,
        xlabel="labeled fraction",
        ylabel=f"{metric} (x100)" if exp.percent else metric,
        title=exp.name,
        percent_x=True,
    )
