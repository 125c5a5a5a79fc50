"""COCO AP/AR: equality with a direct pycocotools run, hand cases, max_dets, validation."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssmd.evaluation import STAT_KEYS, COCOEvaluator, coco_ap, predictions_to_coco_results
from ssmd.utils.errors import DataError

# ----------------------------------------------------------------------------- helpers


def _gt(
    boxes: list[list[float]], crowd: list[int] | None = None, image_ids: tuple[int, ...] = (1,)
) -> dict:
    """GT with every box (xywh) in image ``image_ids[0]``, category 1."""
    crowd = crowd or [0] * len(boxes)
    anns = [
        {
            "id": i + 1,
            "image_id": image_ids[0],
            "category_id": 1,
            "bbox": b,
            "area": b[2] * b[3],
            "iscrowd": c,
        }
        for i, (b, c) in enumerate(zip(boxes, crowd, strict=True))
    ]
    return {
        "images": [{"id": i} for i in image_ids],
        "annotations": anns,
        "categories": [{"id": 1, "name": "nucleus"}],
    }


def _pred(bbox: list[float], score: float, image_id: int = 1, category_id: int = 1) -> dict:
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def _random_case(seed: int) -> tuple[dict, list[dict], int]:
    """A seeded synthetic dataset: GT, predictions and the max_dets to evaluate at.

    Covers images without GT, images without predictions, crowded images (200-400
    objects), iscrowd regions, several categories, small/medium/large objects,
    localisation noise, class confusion and pure false positives.
    """
    rng = np.random.default_rng(seed)
    n_img = int(rng.integers(3, 12))
    n_cat = int(rng.integers(1, 5))
    crowded = seed % 5 == 0  # 4 of 20 cases
    max_dets = {1: 100, 2: 20}.get(seed % 4, 1000)
    images = [{"id": 100 + i} for i in range(n_img)]
    cats = [{"id": 10 + c, "name": f"c{c}"} for c in range(n_cat)]
    anns: list[dict] = []
    preds: list[dict] = []
    for k, img in enumerate(images):
        if k == 0:
            continue  # no GT, no predictions at all
        if crowded and k == 1:
            n_gt, size_hi = int(rng.integers(200, 401)), 40.0
        elif k == 2:
            n_gt, size_hi = 0, 200.0  # no GT, only false positives below
        else:
            n_gt, size_hi = int(rng.integers(0, 25)), 200.0
        no_preds = k == 3
        for _ in range(n_gt):
            x, y = rng.uniform(0, 800, 2)
            w, h = rng.uniform(3, size_hi, 2)
            cat = 10 + int(rng.integers(n_cat))
            crowd = int(rng.random() < 0.04)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": crowd,
                }
            )
            if no_preds:
                continue
            for _ in range(int(rng.integers(0, 3))):
                jitter = rng.normal(0, 0.12, 4) * np.array([w, h, w, h])
                pc = cat if rng.random() < 0.9 else 10 + int(rng.integers(n_cat))
                bbox = [
                    x + jitter[0],
                    y + jitter[1],
                    max(w + jitter[2], 0.5),
                    max(h + jitter[3], 0.5),
                ]
                preds.append(_pred([float(v) for v in bbox], float(rng.random()), img["id"], pc))
        if not no_preds:
            for _ in range(int(rng.integers(0, 8))):
                x, y = rng.uniform(0, 800, 2)
                w, h = rng.uniform(3, 200, 2)
                preds.append(
                    _pred(
                        [float(x), float(y), float(w), float(h)],
                        float(rng.random()),
                        img["id"],
                        10 + int(rng.integers(n_cat)),
                    )
                )
    gt = {"images": images, "annotations": anns, "categories": cats}
    return gt, preds, max_dets


def _reference_stats(gt: dict, preds: list[dict], max_dets: int) -> np.ndarray:
    """pycocotools' own ``stats``, set up here without any ssmd code.

    ``summarize()`` hard-codes ``maxDets=100`` for ``stats[0]``; with ``maxDets =
    [1, 10, max_dets]`` that column does not exist and ``stats[0]`` would be -1. After
    ``accumulate()`` the arrays no longer depend on ``params.maxDets`` (summarize only
    uses it to *find* the column), so relabelling the last slot as 100 makes
    ``summarize()`` report every number at ``max_dets``. With ``max_dets == 100`` no
    relabelling happens and this is the textbook pycocotools run.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(preds))
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.params.maxDets = [1, 10, 100]
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64)


@functools.cache
def _case(seed: int) -> tuple[dict, list[dict], int, np.ndarray]:
    gt, preds, max_dets = _random_case(seed)
    return gt, preds, max_dets, _reference_stats(gt, preds, max_dets)


# ----------------------------------------------------------------------------- equality


@pytest.mark.parametrize("seed", range(20))
def test_equals_pycocotools_on_random_cases(seed: int) -> None:
    gt, preds, max_dets, ref = _case(seed)
    ours = coco_ap(gt, preds, max_dets=max_dets)
    assert ours["max_dets"] == max_dets
    got = np.array([ours[k] for k in STAT_KEYS])
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    # The case must exercise something: some AP defined and not trivially 0 or 1.
    assert 0.0 < ours["AP50"] < 1.0


def test_random_cases_cover_what_they_claim() -> None:
    crowded = [
        s for s in range(20) if max(_count_per_image(_random_case(s)[0]).values(), default=0) >= 200
    ]
    assert len(crowded) >= 3
    assert any(a["iscrowd"] for s in range(20) for a in _random_case(s)[0]["annotations"])
    assert any(len(_random_case(s)[0]["categories"]) >= 3 for s in range(20))
    # The crowded cases at max_dets=1000 must actually differ from pycocotools' default of 100.
    s = next(s for s in crowded if _random_case(s)[2] == 1000)
    gt, preds, _ = _random_case(s)
    assert coco_ap(gt, preds)["AR"] > coco_ap(gt, preds, max_dets=100)["AR"]


def _count_per_image(gt: dict) -> dict[int, int]:
    counts: dict[int, int] = {}
    for a in gt["annotations"]:
        counts[a["image_id"]] = counts.get(a["image_id"], 0) + 1
    return counts


def test_max_dets_100_equals_plain_pycocotools_summarize() -> None:
    """No relabelling involved: the standard pycocotools pipeline, defaults untouched."""
    gt, preds, _ = _random_case(7)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(preds)), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ours = coco_ap(gt, preds, max_dets=100)
    np.testing.assert_allclose([ours[k] for k in STAT_KEYS], ev.stats, atol=1e-12, rtol=0)


def test_faster_backend_equals_pycocotools() -> None:
    pytest.importorskip("faster_coco_eval")
    for seed in range(20):
        gt, preds, max_dets, ref = _case(seed)
        fast = coco_ap(gt, preds, max_dets=max_dets, backend="faster")
        np.testing.assert_allclose(
            [fast[k] for k in STAT_KEYS], ref, atol=1e-6, rtol=0, err_msg=f"seed {seed}"
        )


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown COCO backend"):
        coco_ap(_gt([[0, 0, 10, 10]]), [], backend="detectron")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- hand cases


def test_one_perfect_prediction_gives_ap_1() -> None:
    # One 10x10 GT (area 100 < 32^2: "small"), one prediction on it.
    out = coco_ap(_gt([[10, 10, 10, 10]]), [_pred([10, 10, 10, 10], 0.9)])
    # (AP is 1 - 2e-16, not 1: pycocotools divides by tp + fp + np.spacing(1).)
    for key in ("AP", "AP50", "AP75", "APs", "AR@1", "AR@10", "AR", "ARs"):
        assert out[key] == pytest.approx(1.0, abs=1e-12), key
    # No medium/large GT: pycocotools' "undefined" value.
    for key in ("APm", "APl", "ARm", "ARl"):
        assert out[key] == -1.0, key


def test_iou_062_prediction() -> None:
    # GT [0, 0, 10, 10], prediction [0, 0, 10, 6.2]: IoU = 62 / 100 = 0.62.
    # Matched at IoU thresholds .50, .55, .60 (3 of the 10), missed at .65 ... .95.
    # Where matched, precision is 1 at every recall level -> AP_t = 1; elsewhere 0.
    # AP@[.5:.95] = 3 / 10 = 0.3, AP50 = 1, AP75 = 0; AR = mean recall over t = 0.3.
    # (0.62 rather than 0.60: 0.6 sits exactly on a threshold that np.linspace
    # may round either way.)
    out = coco_ap(_gt([[0, 0, 10, 10]]), [_pred([0, 0, 10, 6.2], 0.9)])
    assert out["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert out["AP75"] == 0.0
    assert out["AP"] == pytest.approx(0.3, abs=1e-12)
    assert out["AR"] == pytest.approx(0.3, abs=1e-12)


def test_false_positive_ranked_first_halves_ap() -> None:
    # One GT; a false positive scored 0.9 then the perfect box scored 0.8.
    # Ranked: FP (P=0, R=0), TP (P=1/2, R=1). Interpolated precision is 1/2 at every
    # recall threshold 0..1 -> AP = 0.5 at every IoU threshold.
    preds = [_pred([200, 200, 10, 10], 0.9), _pred([10, 10, 10, 10], 0.8)]
    out = coco_ap(_gt([[10, 10, 10, 10]]), preds)
    assert out["AP"] == pytest.approx(0.5, abs=1e-12)
    assert out["AR@1"] == 0.0  # the single best detection is the FP
    assert out["AR"] == 1.0


def test_prediction_on_crowd_region_is_ignored() -> None:
    # GT: one object and one iscrowd region. A prediction inside the crowd region,
    # scored above the TP, is ignored (pycocotools semantics) -> AP stays 1.
    # Without the crowd flag the same prediction is an FP ranked first -> AP 0.5.
    boxes: list[list[float]] = [[10, 10, 10, 10], [100, 100, 50, 50]]
    preds = [_pred([110, 110, 20, 20], 0.95), _pred([10, 10, 10, 10], 0.9)]
    crowd = coco_ap(_gt(boxes, crowd=[0, 1]), preds)
    assert crowd["AP"] == pytest.approx(1.0, abs=1e-12)
    # Without the region the 0.95 box is an FP ranked first: precision 1/2 at every
    # recall threshold -> AP 0.5.
    plain = coco_ap(_gt([boxes[0]]), preds)
    assert plain["AP"] == pytest.approx(0.5, abs=1e-12)
    # With the flag off the region is an object of its own that the 0.95 box misses
    # (IoU 400/2500 = 0.16): FP (P 0, R 0), TP (P 1/2, R 1/2) -> precision 1/2 at the
    # 51 recall thresholds 0.00 .. 0.50, 0 above -> AP = 0.5 * 51 / 101.
    unflagged = coco_ap(_gt(boxes), preds)
    assert unflagged["AP"] == pytest.approx(0.5 * 51 / 101, abs=1e-12)


def test_default_max_dets_does_not_cap_recall() -> None:
    # 300 GT boxes (a 20 x 15 grid of 10x10 boxes) and 300 perfect predictions.
    boxes = [[20.0 * c, 20.0 * r, 10.0, 10.0] for r in range(15) for c in range(20)]
    scores = np.linspace(0.99, 0.5, 300)
    preds = [_pred(b, float(s)) for b, s in zip(boxes, scores, strict=True)]
    gt = _gt(boxes)
    out = coco_ap(gt, preds)  # default max_dets = 1000
    assert out["max_dets"] == 1000
    assert out["AR"] == 1.0
    assert out["AP"] == pytest.approx(1.0, abs=1e-12)
    capped = coco_ap(gt, preds, max_dets=100)
    # 100 of 300 found: recall 1/3. Precision is 1 up to recall 1/3, i.e. at the 34
    # recall thresholds 0.00 .. 0.33 of 101, and 0 above -> AP = 34 / 101.
    assert capped["AR"] == pytest.approx(1 / 3, abs=1e-12)
    assert capped["AP"] == pytest.approx(34 / 101, abs=1e-12)
    assert out["AR@10"] == pytest.approx(10 / 300, abs=1e-12)


def test_empty_prediction_list() -> None:
    # pycocotools' loadRes([]) raises IndexError; coco_ap evaluates an empty result set.
    gt = _gt([[10, 10, 10, 10], [100, 100, 50, 50]])
    out = coco_ap(gt, [])
    for key in ("AP", "AP50", "AP75", "APs", "APm", "AR@1", "AR@10", "AR", "ARs", "ARm"):
        assert out[key] == 0.0, key
    assert out["APl"] == -1.0  # no large GT
    # Same numbers as a non-empty evaluation that finds nothing: the only prediction
    # is an FP on an extra image without GT (this path goes through loadRes).
    gt2 = _gt([[10, 10, 10, 10], [100, 100, 50, 50]], image_ids=(1, 2))
    ref = coco_ap(gt2, [_pred([0, 0, 5, 5], 0.1, image_id=2)])
    assert all(out[k] == ref[k] for k in STAT_KEYS)


def test_empty_prediction_list_with_faster_backend() -> None:
    pytest.importorskip("faster_coco_eval")
    gt = _gt([[10, 10, 10, 10], [100, 100, 50, 50]])
    assert coco_ap(gt, [], backend="faster") == coco_ap(gt, [])


def test_image_without_predictions_and_image_without_gt() -> None:
    # Image 1: one GT, found. Image 2: one GT, no prediction. Image 3: no GT, one FP
    # scored below the TP. Ranked: TP (P 1, R 1/2), FP (P 1/2, R 1/2).
    # AP = precision 1 for recall thresholds <= 0.5 (51 of 101), 0 above = 51/101.
    gt = _gt([[10, 10, 10, 10]], image_ids=(1, 2, 3))
    gt["annotations"].append(
        {
            "id": 2,
            "image_id": 2,
            "category_id": 1,
            "bbox": [5, 5, 10, 10],
            "area": 100.0,
            "iscrowd": 0,
        }
    )
    preds = [_pred([10, 10, 10, 10], 0.9, image_id=1), _pred([0, 0, 10, 10], 0.5, image_id=3)]
    out = coco_ap(gt, preds)
    assert out["AP"] == pytest.approx(51 / 101, abs=1e-12)
    assert out["AR"] == 0.5


def test_per_category_ap() -> None:
    gt = _gt([[10, 10, 10, 10]])
    gt["categories"].append({"id": 2, "name": "mitosis"})
    gt["annotations"].append(
        {
            "id": 2,
            "image_id": 1,
            "category_id": 2,
            "bbox": [50, 50, 10, 10],
            "area": 100.0,
            "iscrowd": 0,
        }
    )
    preds = [_pred([10, 10, 10, 10], 0.9), _pred([0, 0, 3, 3], 0.9, category_id=2)]
    out = coco_ap(gt, preds, per_category=True)
    assert out["AP-nucleus"] == pytest.approx(1.0, abs=1e-12)
    assert out["AP-mitosis"] == 0.0
    assert out["AP"] == pytest.approx(0.5, abs=1e-12)


def test_inputs_are_not_modified() -> None:
    gt, preds, _ = _random_case(3)
    gt0, preds0 = copy.deepcopy(gt), copy.deepcopy(preds)
    coco_ap(gt, preds)
    assert gt == gt0
    assert preds == preds0


def test_json_paths(tmp_path: Path) -> None:
    gt, preds, _ = _random_case(4)
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps(preds))
    assert coco_ap(gt_path, pred_path) == coco_ap(gt, preds)


def test_gt_without_area_or_iscrowd_gets_box_area() -> None:
    gt = _gt([[10, 10, 40, 40]])
    del gt["annotations"][0]["area"], gt["annotations"][0]["iscrowd"]
    out = coco_ap(gt, [_pred([10, 10, 40, 40], 0.9)])
    assert out["APm"] == pytest.approx(1.0, abs=1e-12)  # area 1600 = 40 * 40 is "medium"
    assert out["APs"] == -1.0


@pytest.mark.parametrize("bad", [5, 0, True, 10.0])
def test_max_dets_must_be_int_at_least_10(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_dets"):
        coco_ap(_gt([[0, 0, 10, 10]]), [], max_dets=bad)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("pred", "field", "value"),
    [
        (_pred([0, 0, 10, 10], 0.5, image_id=99), "[0].image_id", "99"),
        (_pred([0, 0, 10, 10], 0.5, category_id=7), "[0].category_id", "7"),
        ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}, "[0].score", "None"),
        ({"image_id": 1, "category_id": 1, "score": 0.5}, "[0].bbox", "None"),
        (_pred([0, 0, float("nan"), 10], 0.5), "[0].bbox", "nan"),
        (_pred([0, 0, -3, 10], 0.5), "[0].bbox", "-3"),
        (_pred([0, 0, 10], 0.5), "[0].bbox", "[0, 0, 10]"),
        (_pred("0 0 10 10", 0.5), "[0].bbox", "'0 0 10 10'"),  # type: ignore[arg-type]
        (_pred([0, 0, 10, 10], float("nan")), "[0].score", "nan"),
        (_pred([0, 0, 10, 10], "high"), "[0].score", "'high'"),  # type: ignore[arg-type]
        (_pred([0, 0, 10, 10], 0.5, category_id="1"), "[0].category_id", "'1'"),  # type: ignore[arg-type]
        (_pred([0, 0, 10, 10], 0.5, image_id=1.5), "[0].image_id", "1.5"),  # type: ignore[arg-type]
    ],
)
def test_bad_prediction_names_field_and_value(pred: dict, field: str, value: str) -> None:
    with pytest.raises(DataError) as info:
        coco_ap(_gt([[0, 0, 10, 10]]), [pred])
    msg = str(info.value)
    assert field in msg
    assert value in msg
    assert "<predictions list>" in msg


def test_bad_prediction_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "run7_predictions.json"
    path.write_text(
        json.dumps([_pred([0, 0, 10, 10], 0.5), _pred([0, 0, 10, 10], 0.5, image_id=42)])
    )
    with pytest.raises(DataError) as info:
        coco_ap(_gt([[0, 0, 10, 10]]), path)
    assert str(path) in str(info.value)
    assert "[1].image_id" in str(info.value)
    assert "42" in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "field", "value"),
    [
        (lambda g: g["annotations"].append(dict(g["annotations"][0])), "annotations[1].id", "1"),
        (
            lambda g: g["annotations"][0].update(bbox=[0, 0, float("inf"), 1]),
            "annotations[0].bbox",
            "inf",
        ),
        (lambda g: g["annotations"][0].update(image_id=5), "annotations[0].image_id", "5"),
        (lambda g: g["annotations"][0].update(category_id=3), "annotations[0].category_id", "3"),
        (lambda g: g["annotations"][0].pop("bbox"), "annotations[0].bbox", "None"),
        (lambda g: g["annotations"][0].update(iscrowd=2), "annotations[0].iscrowd", "2"),
        (lambda g: g.pop("categories"), "categories", "None"),
        (lambda g: g["images"].append({"id": 1}), "images[1].id", "1"),
    ],
)
def test_bad_gt_names_field_and_value(mutate: Any, field: str, value: str) -> None:
    gt = _gt([[0, 0, 10, 10]])
    mutate(gt)
    with pytest.raises(DataError) as info:
        coco_ap(gt, [])
    assert field in str(info.value)
    assert value in str(info.value)


def test_bad_gt_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "instances_val.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"instances_val\.json"):
        coco_ap(path, [])
    with pytest.raises(DataError, match="file not found"):
        coco_ap(tmp_path / "missing.json", [])


# ----------------------------------------------------------------------------- evaluator


def test_predictions_to_coco_results_converts_xyxy_and_labels() -> None:
    preds = [
        {
            "boxes": torch.tensor([[1.0, 2.0, 4.0, 6.5], [0.25, 0.5, 10.0, 10.0]]),
            "scores": torch.tensor([0.9, 0.1]),
            "labels": torch.tensor([1, 2]),
        },
        {
            "boxes": torch.zeros(0, 4),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
        },
    ]
    out = predictions_to_coco_results([7, 8], preds, label_to_category={1: 10, 2: 20})
    assert out == [
        {
            "image_id": 7,
            "category_id": 10,
            "bbox": [1.0, 2.0, 3.0, 4.5],
            "score": pytest.approx(0.9),
        },
        {
            "image_id": 7,
            "category_id": 20,
            "bbox": [0.25, 0.5, 9.75, 9.5],
            "score": pytest.approx(0.1),
        },
    ]
    with pytest.raises(DataError, match=r"predictions\[0\].labels"):
        predictions_to_coco_results([7, 8], preds, label_to_category={1: 10})
    with pytest.raises(DataError, match="image_ids"):
        predictions_to_coco_results([7], preds)


def test_coco_evaluator_matches_coco_ap() -> None:
    gt, preds, _ = _random_case(6)
    cat_ids = [c["id"] for c in gt["categories"]]
    label_to_category = {i + 1: c for i, c in enumerate(cat_ids)}
    category_to_label = {c: lbl for lbl, c in label_to_category.items()}
    image_ids = [img["id"] for img in gt["images"]]
    batches: list[tuple[list[int], list[dict[str, torch.Tensor]]]] = []
    for start in range(0, len(image_ids), 3):
        ids = image_ids[start : start + 3]
        batch = []
        for iid in ids:
            mine = [p for p in preds if p["image_id"] == iid]
            xywh = torch.tensor([p["bbox"] for p in mine], dtype=torch.float64).reshape(-1, 4)
            batch.append(
                {
                    "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1),
                    "scores": torch.tensor([p["score"] for p in mine], dtype=torch.float64),
                    "labels": torch.tensor([category_to_label[p["category_id"]] for p in mine]),
                }
            )
        batches.append((ids, batch))

    evaluator = COCOEvaluator(gt, label_to_category=label_to_category)
    evaluator.process(*batches[0])
    evaluator.reset()  # forgets the batch
    for ids, batch in batches:
        evaluator.process(ids, batch)
    got = evaluator.evaluate()
    expected = coco_ap(gt, preds)
    for k in STAT_KEYS:
        assert math.isclose(got[k], expected[k], abs_tol=1e-9), k
    evaluator.reset()
    assert evaluator.evaluate()["AP"] in (0.0, -1.0)
