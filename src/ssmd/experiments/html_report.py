"""``ssmd report DIR --out report.html``: one self-contained page for a run or an experiment.

The page needs no network and no other file: figures are PNGs inlined as base64 ``data:``
URIs, the style sheet is inline, there is no script. Two kinds of folder:

**an experiment folder** (``results.csv``, ``table.md``, ``runs/*/result.json``, from ``ssmd
experiment``): ``table.md``'s Table-1 layout (mean ± std per method and labeled ratio, the
best row, *p*-values) rendered as HTML tables, every finished cell of ``results.csv`` in one
table, FROC curves per labeled ratio (each method's mean ``sensitivity@r`` over its seeds, from
``results.csv``), the experiment's plots (``plot_*.png``), training curves of the cells whose run folder
holds a ``metrics.jsonl``, the experiment file and the commands that reproduce it.

**a training run folder** (``config.yaml``, ``metrics.jsonl``, ``test_metrics.json``,
``test_predictions.json``, ``split.json``, from ``ssmd train``): the test metrics, training
curves (losses; validation metrics), and — when the predictions and the dataset the config
names are there — the FROC and precision-recall curves (IoU >= 0.5) of the test part and
overlays of the best and worst test images (per-image F1 at IoU >= 0.5 of the detections with
score >= 0.3; green: predictions, magenta: ground truth), the resolved config and the commands.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ssmd.utils.errors import DataError

__all__ = ["OVERLAY_SCORE", "markdown_to_html", "write_html_report"]

OVERLAY_SCORE = 0.3
"""Detections drawn on overlays and counted in the per-image F1 that ranks the test images."""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#f3f3f3}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
figure{display:inline-block;margin:.5em;vertical-align:top}figcaption{font-size:.85em;color:#555}
img{max-width:100%}.scroll{overflow-x:auto}
"""


# ---------------------------------------------------------------------------- HTML pieces
def _inline(text: str) -> str:
    """Escape ``text`` and render ``**bold**``, ``*italic*`` and ```code``` (table.md's markup)."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)
    return re.sub(r"\*([^*]+)\*", r"<i>\1</i>", out)


def markdown_to_html(text: str) -> str:
    """The markdown of ``table.md`` (headings, pipe tables, paragraphs) as HTML."""
    out: list[str] = []
    lines = text.splitlines()
    k = 0
    while k < len(lines):
        line = lines[k].rstrip()
        if line.startswith("|"):
            rows = []
            while k < len(lines) and lines[k].startswith("|"):
                cells = [c.strip() for c in lines[k].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                k += 1
            head, body = rows[0], rows[1:]
            out.append('<div class="scroll"><table><thead><tr>')
            out += [f"<th>{_inline(c)}</th>" for c in head]
            out.append("</tr></thead><tbody>")
            for r in body:
                out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>")
            out.append("</tbody></table></div>")
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m:
            level = min(6, len(m.group(1)) + 1)  # the page's own title is the only <h1>
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif line:
            out.append(f"<p>{_inline(line)}</p>")
        k += 1
    return "\n".join(out)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str = "") -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return html.escape(str(v))

    ident = f' id="{table_id}"' if table_id else ""
    parts = [f'<div class="scroll"><table{ident}><thead><tr>']
    parts += [f"<th>{html.escape(h)}</th>" for h in header]
    parts.append("</tr></thead><tbody>")
    for r in rows:
        parts.append("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure_png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _img(data: bytes, caption: str) -> str:
    cap = html.escape(caption)
    return (
        f'<figure><img src="{_png_uri(data)}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'
    )


def _page(title: str, sections: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


# ---------------------------------------------------------------------------- figures
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(path, f"line {n}", line[:60], f"not JSON ({exc.msg})") from None
    return rows


def _curves(metrics: list[dict[str, Any]], prefix: str, title: str) -> bytes | None:
    """One plot of every ``prefix/*`` number against ``step`` (None when there is none)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in metrics:
        step = row.get("step")
        for key, value in row.items():
            if key.startswith(prefix) and isinstance(value, (int, float)) and step is not None:
                if key.endswith(("seconds", "/lr")):
                    continue
                xs, ys = series.setdefault(key[len(prefix) :], ([], []))
                xs.append(float(step))
                ys.append(float(value))
    if not series:
        return None
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for name, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
    ax.set_xlabel("iteration")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _figure_png(fig)


def _match_curves(
    gt: dict[int, np.ndarray], preds: dict[int, tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Greedy IoU >= 0.5 matching over all test images, highest score first.

    Returns ``(scores, tp, image_ids)`` of every detection in descending score and the number
    of ground-truth boxes (precision-recall and FROC both follow from the cumulative sums).
    """
    import torch
    from torchvision.ops import box_iou

    entries: list[tuple[float, int, int]] = []  # (score, image, index)
    for iid, (_, scores) in preds.items():
        entries += [(float(s), iid, j) for j, s in enumerate(scores.tolist())]
    entries.sort(key=lambda e: -e[0])
    used = {iid: np.zeros(len(b), dtype=bool) for iid, b in gt.items()}
    ious = {
        iid: box_iou(torch.as_tensor(preds[iid][0]), torch.as_tensor(gt[iid])).numpy()
        for iid in preds
        if iid in gt and len(gt[iid]) and len(preds[iid][0])
    }
    tp = np.zeros(len(entries), dtype=bool)
    for k, (_, iid, j) in enumerate(entries):
        if iid not in ious:
            continue
        row = np.where(used[iid], -1.0, ious[iid][j])
        best = int(row.argmax())
        if row[best] >= 0.5:
            used[iid][best] = True
            tp[k] = True
    n_gt = sum(len(b) for b in gt.values())
    scores = np.array([e[0] for e in entries])
    return scores, tp, np.array([e[1] for e in entries]), n_gt


def _pr_froc_pngs(
    gt: dict[int, np.ndarray], preds: dict[int, tuple[np.ndarray, np.ndarray]]
) -> list[tuple[bytes, str]]:
    _, tp, _, n_gt = _match_curves(gt, preds)
    if n_gt == 0 or len(tp) == 0:
        return []
    ctp, cfp = np.cumsum(tp), np.cumsum(~tp)
    recall, precision = ctp / n_gt, ctp / np.maximum(ctp + cfp, 1)
    fig = Figure(figsize=(5.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(recall, precision, linewidth=1.5)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title("precision-recall (IoU >= 0.5)")
    ax.grid(True, alpha=0.3)
    pr = _figure_png(fig)
    fig = Figure(figsize=(5.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    fppi = cfp / max(1, len(gt))
    keep = fppi > 0
    ax.plot(fppi[keep], recall[keep], linewidth=1.5)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="false positives per image", ylabel="sensitivity", ylim=(0, 1.02))
    ax.set_title("FROC (IoU >= 0.5)")
    ax.grid(True, alpha=0.3)
    return [(pr, "precision-recall of the test part"), (_figure_png(fig), "FROC of the test part")]


def _image_f1(gt: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> float:
    keep = scores >= OVERLAY_SCORE
    _, tp, _, n_gt = _match_curves({0: gt}, {0: (boxes[keep], scores[keep])})
    n_tp, n_pred = int(tp.sum()), int(keep.sum())
    return 1.0 if n_gt == n_pred == 0 else 2 * n_tp / max(1, n_gt + n_pred)


def _overlay_png(image: Any, boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray) -> bytes:
    import tempfile

    import torch

    from ssmd.evaluation.visualize import draw_overlay

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "o.png"
        draw_overlay(
            image,
            path,
            torch.as_tensor(boxes),
            torch.as_tensor(scores),
            torch.as_tensor(gt),
            score_thresh=OVERLAY_SCORE,
        )
        return path.read_bytes()


# ---------------------------------------------------------------------------- run folders
def _run_predictions(run: Path, config: dict[str, Any]) -> tuple[list[str], str]:
    """FROC / PR figures and best / worst overlays of a run's test part (or why there are none)."""
    preds_file = run / "test_predictions.json"
    if not preds_file.is_file() or not (run / "split.json").is_file():
        return [], "no test_predictions.json / split.json in the run folder"
    from ssmd.data.splits import Split
    from ssmd.structures.boxes import xywh_to_xyxy
    from ssmd.tasks.detection import dataset_from_config

    try:
        dataset = dataset_from_config(config["data"])
    except (DataError, OSError, ValueError, KeyError) as exc:
        return [], f"the run's dataset is not readable here ({exc})"
    split = Split.from_json(run / "split.json")
    results = json.loads(preds_file.read_text())
    label_of = {cid: lab for lab, cid in dataset.label_to_category.items()}
    per_image: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        per_image.setdefault(int(r["image_id"]), []).append(r)
    gt: dict[int, np.ndarray] = {}
    preds: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    index: dict[int, int] = {}
    for name in split.test:
        i = dataset.index_of(name)
        iid = dataset.records[i].image_id
        boxes, _ = dataset.annotation(i)  # (G, 4) xyxy
        gt[iid] = boxes.numpy().reshape(-1, 4)
        rows = [r for r in per_image.get(iid, []) if int(r["category_id"]) in label_of]
        import torch

        xywh = torch.tensor([r["bbox"] for r in rows], dtype=torch.float32).reshape(-1, 4)
        preds[iid] = (
            xywh_to_xyxy(xywh).numpy(),
            np.array([float(r["score"]) for r in rows], dtype=np.float32),
        )
        index[iid] = i
    parts = [_img(png, cap) for png, cap in _pr_froc_pngs(gt, preds)]
    if not parts:
        parts.append("<p>no precision-recall / FROC curve: no detections or no ground truth</p>")
    ranked = sorted(gt, key=lambda iid: _image_f1(gt[iid], *preds[iid]))
    n = min(3, max(1, len(ranked) // 2))  # the best and the worst never share an image
    picks = [("worst", iid) for iid in ranked[:n]] + [("best", iid) for iid in ranked[-n:][::-1]]
    shown: list[tuple[int, str]] = []
    for tag, iid in picks:
        if iid in dict(shown):
            continue
        rec = dataset.records[index[iid]]
        f1 = _image_f1(gt[iid], *preds[iid])
        png = _overlay_png(dataset[index[iid]].image, *preds[iid], gt[iid])
        parts.append(_img(png, f"{tag}: {rec.file_name} (F1 {f1:.2f})"))
        shown.append((iid, tag))
    return parts, ""


def _run_page(run: Path) -> str:
    import yaml

    config_file = run / "config.yaml"
    config: dict[str, Any] = (
        yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    )
    sections = []
    test = run / "test_metrics.json"
    if test.is_file():
        metrics = json.loads(test.read_text())
        rows = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float))]
        sections += [
            "<h2>Test metrics (best.pt)</h2>",
            _table(["metric", "value"], rows, "metrics"),
        ]
    else:
        sections.append("<h2>Test metrics</h2><p>no test_metrics.json (the run did not finish)</p>")
    log = run / "metrics.jsonl"
    if log.is_file():
        rows_log = _read_jsonl(log)
        figs = [
            (_curves(rows_log, "train/", "training losses"), "training losses"),
            (_curves(rows_log, "val/", "validation metrics"), "validation metrics"),
        ]
        sections.append("<h2>Training curves</h2>")
        sections += [_img(png, cap) for png, cap in figs if png is not None]
    sections.append("<h2>Test images: FROC, precision-recall, best and worst overlays</h2>")
    parts, why = _run_predictions(run, config) if config else ([], "no config.yaml")
    sections += parts or [f"<p>{html.escape(why)}</p>"]
    if config_file.is_file():
        sections += [
            "<h2>Resolved config</h2>",
            f"<pre>{html.escape(config_file.read_text())}</pre>",
        ]
    cmds = [
        f"ssmd train --config {run / 'config.yaml'}",
        f"ssmd evaluate --checkpoint {run / 'best.pt'} --froc",
        f"ssmd report {run} --out report.html",
    ]
    sections += ["<h2>Reproduce</h2>", f"<pre>{html.escape(chr(10).join(cmds))}</pre>"]
    return _page(f"ssmd run {run.name}", sections)


# ---------------------------------------------------------------------------- experiments
def _experiment_froc(
    header: Sequence[str], rows: Sequence[dict[str, str]]
) -> list[tuple[bytes, str]]:
    """One FROC figure per labeled ratio: each method's mean ``sensitivity@r`` over its seeds."""
    rates = sorted((float(h.split("@", 1)[1]), h) for h in header if h.startswith("sensitivity@"))
    if not rates or "ratio" not in header or "label" not in header:
        return []
    groups: dict[str, dict[str, list[list[float]]]] = {}
    for r in rows:
        try:
            values = [float(r[h]) for _, h in rates]
        except ValueError:
            continue
        groups.setdefault(r["ratio"], {}).setdefault(r["label"], []).append(values)
    out = []
    for ratio in sorted(groups, key=float):
        fig = Figure(figsize=(5.5, 4.0))
        ax = fig.add_subplot(1, 1, 1)
        for label, runs in groups[ratio].items():
            mean = np.mean(np.array(runs), axis=0)
            ax.plot(
                [x for x, _ in rates],
                mean,
                marker="o",
                markersize=3,
                label=f"{label} (n={len(runs)})",
            )
        ax.set_xscale("log", base=2)
        ax.set(xlabel="false positives per image", ylabel="sensitivity", ylim=(0, 1.02))
        ax.set_title(f"FROC at {float(ratio):.0%} labels")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        out.append((_figure_png(fig), f"FROC at {float(ratio):.0%} labels"))
    return out


def _experiment_page(folder: Path) -> str:
    with (folder / "results.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    sections = []
    table_md = folder / "table.md"
    exp_file = ""
    if table_md.is_file():
        text = table_md.read_text()
        m = re.search(r"Experiment file: `([^`]+)`", text)
        exp_file = m.group(1) if m else ""
        body = "\n".join(line for line in text.splitlines()[1:])  # the first line is the title
        sections += ['<h2>Results (Table-1 layout)</h2><div id="table1">', markdown_to_html(body)]
        sections.append("</div>")

    def value(v: str) -> Any:
        try:
            return float(v)
        except ValueError:
            return v

    shown = [h for h in header if h not in ("run_dir",)]
    sections += [
        f"<h2>Every finished cell ({len(rows)}, results.csv)</h2>",
        _table(shown, [[value(r[h]) for h in shown] for r in rows], "results"),
    ]
    froc = _experiment_froc(header, rows)
    if froc:
        sections.append("<h2>FROC (mean sensitivity over seeds, test part)</h2>")
        sections += [_img(png, cap) for png, cap in froc]
    plots = sorted(folder.glob("plot_*.png"))
    if plots:
        sections.append("<h2>Plots</h2>")
        sections += [_img(p.read_bytes(), p.stem) for p in plots]
    curves = []
    for log in sorted(folder.glob("runs/*/metrics.jsonl")):
        png = _curves(_read_jsonl(log), "val/", f"{log.parent.name}: validation")
        if png is not None:
            curves.append(_img(png, log.parent.name))
    sections.append("<h2>Training curves</h2>")
    sections += curves or [
        "<p>no runs/*/metrics.jsonl here (a published results folder keeps result.json only)</p>"
    ]
    if exp_file and Path(exp_file).is_file():
        sections += [
            f"<h2>Experiment file ({html.escape(exp_file)})</h2>",
            f"<pre>{html.escape(Path(exp_file).read_text())}</pre>",
        ]
    cfg = exp_file or "EXP.yaml"
    cmds = [
        f"ssmd experiment --config {cfg} --output-dir {folder}",
        f"ssmd experiment --config {cfg} --output-dir {folder} --report-only",
        f"ssmd report {folder} --out report.html",
    ]
    sections += ["<h2>Reproduce</h2>", f"<pre>{html.escape(chr(10).join(cmds))}</pre>"]
    title = table_md.read_text().splitlines()[0].lstrip("# ") if table_md.is_file() else folder.name
    return _page(f"ssmd experiment {title}", sections)


def write_html_report(folder: str | Path, out: str | Path) -> Path:
    """Write the report of a run or experiment ``folder`` to ``out`` (module docstring).

    Raises:
        DataError: ``folder`` is neither (it names what was looked for).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "DIR", str(folder), "not a folder")
    if (folder / "results.csv").is_file():
        page = _experiment_page(folder)
    elif any((folder / n).is_file() for n in ("metrics.jsonl", "config.yaml", "test_metrics.json")):
        page = _run_page(folder)
    else:
        raise DataError(
            folder,
            "DIR",
            str(folder),
            "neither an experiment folder (results.csv) nor a training run folder "
            "(config.yaml, metrics.jsonl, test_metrics.json)",
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
