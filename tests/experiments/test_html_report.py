"""``ssmd report``: a self-contained page whose tables hold the folder's numbers and whose
images decode as non-blank PNGs (parsed HTML), and the page in a real headless Chromium when
one is installed (Debian: ``apt-get install chromium-headless-shell``; skipped otherwise)."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ssmd.cli.main import main
from ssmd.config import dump_config, load_config
from ssmd.data.splits import make_split
from ssmd.experiments.html_report import markdown_to_html, write_html_report
from ssmd.tasks.detection import dataset_from_config
from ssmd.utils.errors import DataError

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results" / "table1_cpu"


class _Page(HTMLParser):
    """Tables (by id) as lists of rows of cell texts, images' src, captions, external refs."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.captions: list[str] = []
        self.external: list[str] = []
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None
        self._n = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            v = a.get(key) or ""
            if v and not v.startswith("data:"):
                self.external.append(v)
        if tag == "table":
            self._n += 1
            self._table = self.tables.setdefault(a.get("id") or f"table{self._n}", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif tag == "figcaption":
            self._caption = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "figcaption" and self._caption is not None:
            self.captions.append("".join(self._caption))
            self._caption = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._caption is not None:
            self._caption.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    assert page.external == []  # self-contained: nothing to fetch
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        im = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("L"))
        assert im.size > 1000 and float(im.std()) > 1.0  # a real, non-blank picture
    return page


def test_experiment_page_holds_results_csv_and_the_table1_layout(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    folder.mkdir()
    for name in ("results.csv", "table.md", "plot_ap.png"):
        shutil.copy(RESULTS / name, folder / name)
    out = write_html_report(folder, tmp_path / "r.html")
    page = _parse(out)
    with (folder / "results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    table = page.tables["results"]
    header = table[0]
    assert len(table) == len(rows) + 1
    col = {h: header.index(h) for h in ("cell", "AP", "AP50", "seed")}
    for row, cells in zip(rows, table[1:], strict=True):
        assert cells[col["cell"]] == row["cell"]
        for key in ("AP", "AP50", "seed"):
            assert float(cells[col[key]]) == pytest.approx(float(row[key]), abs=5e-5)
    text = out.read_text()
    assert "<i>p</i>-value (best vs second)" in text  # table.md's p-value row
    first = next(t for k, t in page.tables.items() if k != "results")
    assert first[0][:2] == ["Method", "10%"] and first[1][0] == "Supervised"
    ratios = sorted({float(r["ratio"]) for r in rows})
    assert page.captions == [f"FROC at {r:.0%} labels" for r in ratios] + ["plot_ap"]
    assert len(page.images) == len(ratios) + 1


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    config = load_config(
        None,
        [
            "data.synthetic.n_images=10",
            "data.synthetic.image_size=96",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"output_dir={run}",
        ],
    )
    dataset = dataset_from_config(config["data"])
    split = make_split(dataset, seed=0, fractions=(0.4, 0.2, 0.4))
    dump_config(config, run / "config.yaml")
    split.to_json(run / "split.json")
    rng = np.random.default_rng(0)
    results: list[dict[str, Any]] = []
    for k, name in enumerate(split.test):
        i = dataset.index_of(name)
        boxes, _ = dataset.annotation(i)
        keep = boxes if k % 2 == 0 else boxes[: len(boxes) // 3]  # good and bad images
        for b in keep.tolist():
            x1, y1, x2, y2 = (v + rng.normal(0, 0.5) for v in b)
            results.append(
                {
                    "image_id": dataset.records[i].image_id,
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(rng.uniform(0.4, 1.0)),
                }
            )
        results.append(  # one false positive per image: the FROC has a curve to draw
            {
                "image_id": dataset.records[i].image_id,
                "category_id": 1,
                "bbox": [1.0, 1.0, 6.0, 6.0],
                "score": 0.35,
            }
        )
    (run / "test_predictions.json").write_text(json.dumps(results))
    (run / "test_metrics.json").write_text(json.dumps({"AP": 0.4321, "AP50": 0.8765}))
    log = [
        {"step": s, "train/loss": 2.0 / s, "train/loss_cls": 1.0 / s, "train/lr": 1e-3}
        for s in (1, 2, 3, 4)
    ]
    log += [{"step": 2, "val/AP": 0.2}, {"step": 4, "val/AP": 0.3}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n")
    return run


def test_run_page_has_metrics_curves_pr_froc_and_overlays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run_folder(tmp_path)
    out = tmp_path / "run.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert "self-contained" in capsys.readouterr().out
    page = _parse(out)
    assert page.tables["metrics"][1:] == [["AP", "0.4321"], ["AP50", "0.8765"]]
    caps = page.captions
    assert caps[:2] == ["training losses", "validation metrics"]
    assert "precision-recall of the test part" in caps and "FROC of the test part" in caps
    best = [c for c in caps if c.startswith("best:")]
    worst = [c for c in caps if c.startswith("worst:")]
    assert (
        best
        and worst
        and float(best[0].rsplit("F1 ", 1)[1].rstrip(")"))
        > float(worst[0].rsplit("F1 ", 1)[1].rstrip(")"))
    )
    text = out.read_text()
    assert "ssmd train --config" in text and "synthetic" in text  # commands and config


def test_a_folder_that_is_neither_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="neither an experiment folder"):
        write_html_report(tmp_path, tmp_path / "x.html")


def test_markdown_tables_headings_and_emphasis() -> None:
    out = markdown_to_html("### AP\n\n| a | b |\n|---|---:|\n| **x** | 1 <2 |\n\ntext *p* `c`")
    assert "<h4>AP</h4>" in out and "<td><b>x</b></td><td>1 &lt;2</td>" in out
    assert "<p>text <i>p</i> <code>c</code></p>" in out


def _browser() -> str | None:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(
    _browser() is None,
    reason="no headless Chromium (Debian: apt-get install chromium-headless-shell)",
)
def test_the_run_page_in_a_real_headless_browser(tmp_path: Path) -> None:
    import subprocess

    browser = _browser()
    assert browser is not None
    page = write_html_report(_run_folder(tmp_path), tmp_path / "run.html")
    flags = [browser, "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    flags += ["--enable-logging=stderr", "--v=0", "--window-size=1100,2600"]
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [*flags, f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "CONSOLE" not in run.stderr  # no console message (error or other) from the page
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60
    )
    parsed = _Page()
    parsed.feed(dom.stdout)
    assert parsed.tables["metrics"][1:] == [["AP", "0.4321"], ["AP50", "0.8765"]]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    colour = (pixels.max(axis=2) - pixels.min(axis=2)) > 60  # plot lines and boxes; text is grey
    assert colour.mean() > 1e-3, colour.mean()  # figures rendered: 3.4e-3; broken images: 9e-5


@pytest.mark.skipif(
    _browser() is None,
    reason="no headless Chromium (Debian: apt-get install chromium-headless-shell)",
)
def test_the_experiment_page_in_a_real_headless_browser_holds_results_csv(
    tmp_path: Path,
) -> None:
    import subprocess

    folder = tmp_path / "exp"
    folder.mkdir()
    for name in ("results.csv", "table.md", "plot_ap.png"):
        shutil.copy(RESULTS / name, folder / name)
    page = write_html_report(folder, tmp_path / "exp.html")
    browser = _browser()
    assert browser is not None
    flags = [browser, "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dom.returncode == 0 and "CONSOLE" not in dom.stderr
    parsed = _Page()
    parsed.feed(dom.stdout)
    with (folder / "results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    table = parsed.tables["results"]
    ap = table[0].index("AP")
    assert [float(r[ap]) for r in table[1:]] == pytest.approx(
        [float(r["AP"]) for r in rows], abs=5e-5
    )
