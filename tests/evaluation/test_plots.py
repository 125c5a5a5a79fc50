"""FROC and metric-curve figures: valid PNGs with what they claim to show."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
import torch
from PIL import Image

from ssmd.evaluation import froc, plot_curves, plot_froc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result(shift: float) -> object:
    gt = [torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), torch.tensor([[0.0, 0, 10, 10]])]
    boxes = [
        torch.tensor([[0.0, 0, 10, 10], [100, 100, 110, 110], [20, 20, 30, 31]]),
        torch.tensor([[50.0, 50, 60, 60]]),
    ]
    scores = [torch.tensor([0.9, 0.8 + shift, 0.5]), torch.tensor([0.7])]
    return froc(gt, boxes, scores)


def _check_png(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_plot_froc_single_and_many(tmp_path: Path) -> None:
    backend = matplotlib.get_backend()
    one = plot_froc(_result(0.0), tmp_path / "one.png")  # type: ignore[arg-type]
    assert _check_png(one) == (900, 675)  # 6 x 4.5 in at 150 dpi
    many = plot_froc(
        {"supervised": _result(0.0), "ssmd": _result(0.15)},  # type: ignore[dict-item]
        tmp_path / "sub" / "many.png",
        title="FROC, 10% labels",
    )
    _check_png(many)
    assert many.read_bytes() != one.read_bytes()
    assert matplotlib.get_backend() == backend  # the global backend is left alone


def test_plot_froc_needs_a_result(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        plot_froc({}, tmp_path / "x.png")


def test_plot_curves(tmp_path: Path) -> None:
    ratios = [0.05, 0.1, 0.2, 0.5]
    out = plot_curves(
        {
            "supervised": (ratios, [0.31, 0.42, 0.5, 0.58], [0.02, 0.015, 0.01, 0.01]),
            "ssmd": (ratios, [0.36, 0.46, 0.53, 0.59], None),
        },
        tmp_path / "ap_vs_ratio.png",
        ylabel="AP@[.5:.95]",
        logx=True,
        percent_x=True,
        title="AP vs labeled fraction",
    )
    _check_png(out)
    with pytest.raises(ValueError, match="same length"):
        plot_curves({"bad": ([0.1, 0.2], [0.3], None)}, tmp_path / "bad.png")
