"""MIL trains end to end on a BUSI layout and the evaluation reports CorLoc and image AUC."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ssmd.config import load_config
from ssmd.data.datasets.busi import BUSI_FOLDER
from ssmd.tasks.detection import run_training, train_once
from ssmd.tasks.mil_self_training import select_confident


def make_busi(root: Path, h: int = 72, w: int = 96) -> Path:
    """3 benign, 3 malignant (one square mass each) and 2 normal images of noise."""
    rng = np.random.default_rng(0)
    for cls, n in (("benign", 3), ("malignant", 3), ("normal", 2)):
        folder = root / BUSI_FOLDER / cls
        folder.mkdir(parents=True)
        for k in range(1, n + 1):
            image = rng.integers(0, 120, (h, w), dtype=np.uint8)
            mask = np.zeros((h, w), np.uint8)
            if cls != "normal":
                y, x = 10 + 5 * k, 12 + 9 * k
                mask[y : y + 24, x : x + 30] = 255
                image[mask > 0] = 220
            Image.fromarray(image).save(folder / f"{cls} ({k}).png")
            Image.fromarray(mask).save(folder / f"{cls} ({k})_mask.png")
    return root


def _config(tmp_path: Path, method: str, *extra: str) -> dict[str, Any]:
    root = make_busi(tmp_path / "busi")
    return load_config(
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            "data.format=busi",
            f"data.root={root}",
            "data.input_size=96",
            "split.train=0.5",
            "split.val=0.25",
            "split.test=0.25",
            "split.labeled_count=2",
            "model.name=faster_rcnn",
            "model.fpn_channels=16",
            "model.representation_size=32",
            "model.box_batch_size_per_image=16",
            "model.rpn_post_nms_top_n_train=30",
            "model.rpn_post_nms_top_n_test=30",
            "model.score_thresh=0.0",
            "model.detections_per_img=10",
            f"method.name={method}",
            "train.max_iters=2",
            "train.batch_size=1",
            "train.warmup_iters=0",
            "train.eval_every=2",
            "train.checkpoint_every=2",
            "train.progress=false",
            "eval.select_metric=CorLoc",
            "eval.corloc_boot=50",
            *extra,
        ],
    )


def test_mil_on_a_busi_layout_reports_corloc(tmp_path: Path) -> None:
    config = _config(tmp_path, "mil")
    summary = train_once(config, log=lambda _m: None)
    test = summary["test"]
    assert {"CorLoc", "CorLoc_ci_low", "CorLoc_ci_high", "CorLoc/images"} <= set(test)
    assert 0.0 <= test["CorLoc_ci_low"] <= test["CorLoc"] <= test["CorLoc_ci_high"] <= 1.0
    logged = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    train_rows = [r for r in logged if "train/mil_images" in r]
    assert train_rows and all(r["train/mil_weak_step"] == 1.0 for r in train_rows)


def test_select_confident_by_hand() -> None:
    cands = [
        {"image_label": 1, "label": 1, "score": 0.6, "id": "a"},
        {"image_label": 2, "label": 1, "score": 0.99, "id": "b"},  # disagrees: never moved
        {"image_label": 2, "label": 2, "score": 0.9, "id": "c"},
        {"image_label": 1, "label": None, "score": 0.0, "id": "d"},  # no detection
        {"image_label": 1, "label": 1, "score": 0.6, "id": "e"},  # tie with a: a first
    ]
    pick = [c["id"] for c in select_confident(cands, 0.5, 5)]  # round(2.5) = 2
    assert pick == ["c", "a"]
    assert [c["id"] for c in select_confident(cands, 1.0, 5)] == ["c", "a", "e"]


def test_self_training_stages_move_weak_images_to_the_strong_set(tmp_path: Path) -> None:
    config = _config(
        tmp_path, "mil_self_training", "method.self_train_fraction=1.0", "model.score_thresh=0.0"
    )
    summary = run_training(config, log=lambda _m: None)
    out = tmp_path / "run"
    record = json.loads((out / "self_training.json").read_text())
    assert summary["self_training"] == record["stats"]
    assert all(m["label"] == m["image_label"] for m in record["moved"])
    # an untrained detector rarely agrees with the image label: move one weak abnormal image
    # by hand (a valid record: newer than the initial best.pt), then retrain only
    initial = json.loads((out / "initial" / "split.json").read_text())
    name = next(n for n in initial["unlabeled"] if not n.startswith("normal"))
    label = 2 if name.startswith("malignant") else 1
    record["moved"] = [
        {
            "file_name": name,
            "image_label": label,
            "label": label,
            "score": 0.9,
            "box": [10.0, 10.0, 40.0, 30.0],
        }
    ]
    (out / "self_training.json").write_text(json.dumps(record))
    (out / "test_metrics.json").unlink()
    summary = run_training(config, log=lambda _m: None)
    final = json.loads((out / "split.json").read_text())
    assert final["labeled"] == sorted([*initial["labeled"], name])
    assert final["unlabeled"] == sorted(set(initial["unlabeled"]) - {name})
    assert "initial" in summary and "CorLoc" in summary["test"]
    # a record of another fraction is stale: the selection runs again
    from ssmd.tasks.mil_self_training import Selection

    assert Selection().done(config)
    config["method"]["self_train_fraction"] = 0.5
    assert not Selection().done(config)
