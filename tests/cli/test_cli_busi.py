"""`ssmd data convert/stats/split --format busi` and `ssmd evaluate --corloc`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from ssmd.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "datasets"))
from test_busi import make_busi


def _xywh(box: list[int]) -> list[int]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


def test_data_convert_stats_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_busi(tmp_path / "busi")
    gt = tmp_path / "gt.json"
    assert main(["data", "convert", "--format", "busi", str(root), "--out", str(gt)]) == 0
    out = capsys.readouterr().out
    assert "wrote 5 images and 4 boxes" in out and "0 groups with conflicting labels" in out
    d = json.loads(gt.read_text())
    assert [im["image_label"] for im in d["images"]] == [
        "benign", "benign", "malignant", "normal", "normal"
    ]  # fmt: skip
    assert [c["name"] for c in d["categories"]] == ["benign", "malignant"]
    assert main(["data", "stats", "--format", "busi", str(root)]) == 0
    out = capsys.readouterr().out
    assert "image labels: normal 2, benign 2, malignant 1" in out and "duplicates (dhash" in out
    assert main(["data", "stats", "--format", "busi", str(root), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["report"]["duplicates"]["groups"] == 0 and st["objects"] == 4
    split = tmp_path / "split.json"
    argv = ["data", "split", "--format", "busi", str(root), "--out", str(split)]
    assert main([*argv, "--strong", "1", "--fractions", "0.6", "0.2", "0.2"]) == 0
    s = json.loads(split.read_text())
    assert len(s["labeled"]) == 1 and not s["labeled"][0].startswith("normal")
    assert len(s["train"]) == 3 and s["ratios"]["labeled_count"] == 1
    assert main([*argv, "--strong", "many"]) == 2
    assert "--strong 'many'" in capsys.readouterr().err


def _preds(gt: dict[str, Any], shift: dict[str, int]) -> list[dict[str, Any]]:
    """One detection per lesion image: its first GT box, moved right by ``shift[file]`` px."""
    ids = {im["file_name"]: im["id"] for im in gt["images"]}
    first: dict[int, dict[str, Any]] = {}
    for a in gt["annotations"]:
        first.setdefault(a["image_id"], a)
    out = []
    for name, dx in shift.items():
        a = first[ids[name]]
        x, y, w, h = a["bbox"]
        out.append(
            {"image_id": ids[name], "category_id": a["category_id"], "bbox": [x + dx, y, w, h],
             "score": 0.9}
        )  # fmt: skip
    return out


def test_evaluate_corloc_on_prediction_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_busi(tmp_path / "busi")
    gt_path = tmp_path / "gt.json"
    assert main(["data", "convert", "--format", "busi", str(root), "--out", str(gt_path)]) == 0
    gt = json.loads(gt_path.read_text())
    a = _preds(gt, {"benign/benign (1).png": 0, "benign/benign (2).png": 0,
                    "malignant/malignant (1).png": 7})  # fmt: skip
    b = _preds(gt, {"benign/benign (1).png": 9, "benign/benign (2).png": 0,
                    "malignant/malignant (1).png": 7})  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    metrics = tmp_path / "m.json"
    argv = ["evaluate", "--gt", str(gt_path), "--pred", str(tmp_path / "a.json"), "--corloc",
            "--bootstrap", "200", "--out", str(metrics)]  # fmt: skip
    assert main([*argv, "--compare", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "CorLoc_ci_low" in out
    m = json.loads(metrics.read_text())
    assert m["CorLoc"] == pytest.approx(2 / 3) and m["CorLoc/images"] == 3
    assert m["CorLoc/images_without_lesion"] == 2
    assert m["vs_B/corloc_b"] == pytest.approx(1 / 3) and m["vs_B/diff"] == pytest.approx(1 / 3)
    assert "AP" in m and "image_AUC/malignant" in m
    with pytest.raises(SystemExit, match="need --corloc"):
        main(["evaluate", "--gt", str(gt_path), "--pred", str(tmp_path / "a.json"),
              "--compare", str(tmp_path / "b.json")])  # fmt: skip


@pytest.mark.slow
def test_evaluate_corloc_on_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_busi(tmp_path / "busi", scale=8)  # 96 x 128 px: room for every FPN level
    out = tmp_path / "run"
    tiny = ["data.format=synthetic", "data.synthetic.n_images=8", "data.synthetic.image_size=128",
            "data.input_size=256", "model.fpn_channels=16", "model.head_convs=1",
            "train.max_iters=2", "train.batch_size=2", "train.eval_every=2",
            "train.checkpoint_every=2", "train.warmup_iters=1", "train.progress=false",
            "split.train=0.5", "split.val=0.25", "split.test=0.25", f"output_dir={out}"]  # fmt: skip
    assert main(["train", *tiny]) == 0
    metrics = tmp_path / "m.json"
    argv = ["evaluate", "--checkpoint", str(out / "best.pt"), "--format", "busi", str(root),
            "--corloc", "--bootstrap", "100", "--out", str(metrics)]  # fmt: skip
    assert main(argv) == 0
    m = json.loads(metrics.read_text())
    assert m["CorLoc/images"] == 3 and 0.0 <= m["CorLoc"] <= 1.0
    assert m["image_AUC/source"].startswith("detections")
    with pytest.raises(SystemExit, match="needs the images"):
        main(["evaluate", "--checkpoint", str(out / "best.pt"), "--corloc"])
