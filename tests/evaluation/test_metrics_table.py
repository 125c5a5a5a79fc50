"""format_metrics_table."""

from __future__ import annotations

from ssmd.evaluation import format_metrics_table


def test_table_layout_and_number_formats() -> None:
    text = format_metrics_table(
        {"AP": 0.51234567, "APl": -1.0, "max_dets": 1000.0, "images": 12, "backend": "faster"}
    )
    assert text == "\n".join(
        [
            "| metric   |   value |",
            "|----------|--------:|",
            "| AP       |  0.5123 |",
            "| APl      | -1.0000 |",
            "| max_dets |    1000 |",
            "| images   |      12 |",
            "| backend  |  faster |",
        ]
    )


def test_table_title_and_digits() -> None:
    text = format_metrics_table({"CPM": 2 / 3, "bad": float("nan")}, digits=2, title="FROC")
    assert text.splitlines()[:2] == ["FROC", ""]
    assert "| CPM    |  0.67 |" in text
    assert "| bad    |   nan |" in text
