"""``ssmd export`` + ``ssmd predict --backend onnxruntime`` give the PyTorch backend's detections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ssmd.cli.main import main
from ssmd.config import load_config
from ssmd.engine.checkpoint import save_checkpoint
from ssmd.tasks.detection import build_model

pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'ssmd[onnx]')")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def _checkpoint(tmp_path: Path) -> Path:
    config = load_config(
        None,
        [
            "data.input_size=128",
            "model.fpn_channels=16",
            "model.head_convs=1",
            "model.score_thresh=0.3",
        ],
    )
    torch.manual_seed(0)
    model = build_model(config["model"], 1)
    with torch.no_grad():  # spread the untrained scores: no near-ties for the order to hinge on
        model.head.cls_logits.weight.mul_(30.0)
    return save_checkpoint(
        {"kind": "ssmd-model", "config": config, "model": model.state_dict(), "num_classes": 1},
        tmp_path / "best.pt",
    )


def test_export_then_predict_with_onnxruntime_matches_pytorch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(tmp_path)
    onnx_file = tmp_path / "model.onnx"
    rc = main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(onnx_file)])
    out = capsys.readouterr().out
    assert rc == 0 and onnx_file.is_file() and "max |difference|" in out
    diff = float(out.rsplit("max |difference|", 1)[1].strip())
    assert diff < 1e-4
    src = ["--format", "synthetic", "2"]
    assert (
        main(["predict", "--checkpoint", str(ckpt), *src, "--out", str(tmp_path / "a.json")]) == 0
    )
    assert (
        main(
            [
                "predict",
                "--backend",
                "onnxruntime",
                "--checkpoint",
                str(onnx_file),
                *src,
                "--out",
                str(tmp_path / "b.json"),
            ]
        )
        == 0
    )
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert len(a) == len(b) > 10
    for x, y in zip(a, b, strict=True):
        assert (x["image_id"], x["category_id"]) == (y["image_id"], y["category_id"])
        assert max(abs(u - v) for u, v in zip(x["bbox"], y["bbox"], strict=True)) < 1e-2
        assert abs(x["score"] - y["score"]) < 1e-4


def test_onnxruntime_backend_refuses_a_pytorch_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(tmp_path)
    args = ["predict", "--backend", "onnxruntime", "--checkpoint", str(ckpt)]
    assert main([*args, "--format", "synthetic", "2", "--out", str(tmp_path / "x.json")]) == 2
    assert "needs an .onnx file" in capsys.readouterr().err


def test_a_classifier_exports_and_predicts_the_same_probabilities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import csv

    from ssmd.tasks.classification import build_classification_model

    config = load_config(None, ["task=classification"])
    torch.manual_seed(0)
    model = build_classification_model(config["model"], 3, 1)
    ckpt = save_checkpoint(
        {
            "kind": "ssmd-model",
            "task": "classification",
            "config": config,
            "model": model.state_dict(),
            "num_classes": 3,
            "in_channels": 1,
            "class_names": ["a", "b", "c"],
            "multi_label": False,
        },
        tmp_path / "best.pt",
    )
    onnx_file = tmp_path / "cls.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(onnx_file)]) == 0
    assert "classification" in capsys.readouterr().out
    src = ["--format", "synthetic_cls", "6"]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["predict", "--checkpoint", str(ckpt), *src, "--out", str(a)]) == 0
    onnx_args = ["--backend", "onnxruntime", "--checkpoint", str(onnx_file)]
    assert main(["predict", *onnx_args, *src, "--out", str(b)]) == 0
    rows_a = list(csv.reader(a.open()))
    rows_b = list(csv.reader(b.open()))
    assert rows_a[0] == rows_b[0] == ["image", "predicted", "prob_a", "prob_b", "prob_c"]
    assert len(rows_a) == len(rows_b) == 7
    for ra, rb in zip(rows_a[1:], rows_b[1:], strict=True):
        assert ra[:2] == rb[:2]
        assert max(abs(float(u) - float(v)) for u, v in zip(ra[2:], rb[2:], strict=True)) < 1e-4


def test_export_with_nms_in_the_graph_predicts_the_same(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(tmp_path)
    onnx_file = tmp_path / "nms.onnx"
    args = ["export", "--checkpoint", str(ckpt), "--out", str(onnx_file), "--nms-in-graph"]
    assert main(args) == 0
    assert "max |difference|" in capsys.readouterr().out
    src = ["--format", "synthetic", "2", "--out"]
    assert main(["predict", "--checkpoint", str(ckpt), *src, str(tmp_path / "a.json")]) == 0
    onnx_args = ["--backend", "onnxruntime", "--checkpoint", str(onnx_file)]
    assert main(["predict", *onnx_args, *src, str(tmp_path / "b.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert len(a) == len(b) > 10
    for x, y in zip(a, b, strict=True):
        assert (x["image_id"], x["category_id"]) == (y["image_id"], y["category_id"])
        assert max(abs(u - v) for u, v in zip(x["bbox"], y["bbox"], strict=True)) < 1e-2
