"""CorLoc on hand-drawn cases, the seeded bootstrap by hand, paired tests, image-level AUC."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from ssmd.evaluation import corloc as corloc_mod
from ssmd.evaluation.corloc import (
    CorLocOutcomes,
    bootstrap_ci,
    corloc_from_coco,
    corloc_outcomes,
    corloc_report,
    image_auc,
    image_scores_from_detections,
    load_image_scores,
    paired_comparison,
)
from ssmd.utils.errors import DataError

B, M = 1, 2  # benign, malignant
SQ = [0, 0, 10, 10]

# per image: (GT boxes, GT labels, pred boxes, pred scores, pred labels)
CASE: list[tuple[list[Any], list[int], list[Any], list[float], list[int]]] = [
    # 1: the top detection is right
    ([SQ], [B], [SQ], [0.9], [B]),
    # 2: the top detection misses; a weaker one (score 0.5) hits
    ([SQ], [M], [[20, 20, 30, 30], SQ], [0.9, 0.5], [M, M]),
    # 3: the top detection hits but has the wrong class; the top benign one misses
    ([SQ], [B], [SQ, [50, 50, 60, 60]], [0.9, 0.3], [M, B]),
    # 4: no lesion (normal image): not counted, whatever is detected
    ([], [], [SQ], [0.99], [B]),
    # 5: a lesion and no detection
    ([SQ], [B], [], [], []),
    # 6: IoU exactly 0.5 counts; of two tied top scores the first (input order) is used
    ([SQ], [B], [[0, 0, 10, 5], [40, 40, 50, 50]], [0.8, 0.8], [B, B]),
]


def _outcomes(**kw: Any) -> CorLocOutcomes:
    cols = list(zip(*CASE, strict=True))
    return corloc_outcomes(*cols, image_ids=[1, 2, 3, 4, 5, 6], **kw)  # type: ignore[arg-type, misc]


@pytest.mark.parametrize(
    ("kw", "hits", "corloc"),
    [
        ({}, [1, 0, 0, 0, 1], 2 / 5),
        ({"class_aware": False}, [1, 0, 1, 0, 1], 3 / 5),
        ({"rule": "score_threshold"}, [1, 1, 0, 0, 1], 3 / 5),
        ({"rule": "score_threshold", "class_aware": False}, [1, 1, 1, 0, 1], 4 / 5),
        ({"rule": "score_threshold", "score_threshold": 0.95}, [0, 0, 0, 0, 0], 0.0),
        ({"iou_threshold": 0.51}, [1, 0, 0, 0, 0], 1 / 5),
    ],
)
def test_hand_case(kw: dict[str, Any], hits: list[int], corloc: float) -> None:
    o = _outcomes(**kw)
    assert o.image_ids == (1, 2, 3, 5, 6)
    assert o.hits.tolist() == hits and o.trials.tolist() == [1] * 5
    assert o.images_without_lesion == 1
    assert o.corloc == pytest.approx(corloc, abs=1e-12)


def test_lesions_of_two_classes_are_two_trials() -> None:
    gt = [[SQ, [20, 20, 30, 30]]]
    preds = [[SQ, SQ]]
    aware = corloc_outcomes(gt, [[B, M]], preds, [[0.4, 0.9]], [[B, M]])
    assert aware.hits.tolist() == [1] and aware.trials.tolist() == [2] and aware.corloc == 0.5
    agnostic = corloc_outcomes(gt, [[B, M]], preds, [[0.4, 0.9]], [[B, M]], class_aware=False)
    assert agnostic.hits.tolist() == [1] and agnostic.trials.tolist() == [1]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        corloc_outcomes([[SQ]], [[B]], [], [], [])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        corloc_outcomes([[[0, 0, 1]]], [[B]], [[]], [[]], [[]])
    with pytest.raises(ValueError, match="1 values for 2 boxes"):
        corloc_outcomes([[SQ]], [[B]], [[SQ, SQ]], [[0.5]], [[B, B]])
    with pytest.raises(ValueError, match="rule"):
        corloc_outcomes([[SQ]], [[B]], [[]], [[]], [[]], rule="any")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="iou_threshold"):
        corloc_outcomes([[SQ]], [[B]], [[]], [[]], [[]], iou_threshold=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        corloc_outcomes([[SQ]], [[B]], [[SQ]], [[math.nan]], [[B]])
    empty = corloc_outcomes([[]], [[]], [[]], [[]], [[]])
    assert math.isnan(empty.corloc)
    with pytest.raises(ValueError, match="no image with a lesion"):
        bootstrap_ci(empty)


# ---------------------------------------------------------------------- COCO input
def _coco_case() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    labels = ["benign", "malignant", "benign", "normal", "benign", "benign"]
    images = [
        {"id": k + 1, "file_name": f"{k}.png", "width": 64, "height": 64, "image_label": lab}
        for k, lab in enumerate(labels)
    ]
    anns, res = [], []
    for k, (gb, gl, pb, ps, pl) in enumerate(CASE):
        for box, lab in zip(gb, gl, strict=True):
            x1, y1, x2, y2 = box
            anns.append(
                {"id": len(anns) + 1, "image_id": k + 1, "category_id": lab,
                 "bbox": [x1, y1, x2 - x1, y2 - y1]}
            )  # fmt: skip
        for box, s, lab in zip(pb, ps, pl, strict=True):
            x1, y1, x2, y2 = box
            res.append(
                {"image_id": k + 1, "category_id": lab, "bbox": [x1, y1, x2 - x1, y2 - y1],
                 "score": s}
            )  # fmt: skip
    # a crowd region is not a lesion
    anns.append({"id": 99, "image_id": 4, "category_id": B, "bbox": [0, 0, 5, 5], "iscrowd": 1})
    gt = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}],
    }
    return gt, res


def test_coco_input_gives_the_same_outcomes(tmp_path: Path) -> None:
    gt, res = _coco_case()
    o, info = corloc_from_coco(gt, res)
    ref = _outcomes()
    assert o.image_ids == ref.image_ids and o.hits.tolist() == ref.hits.tolist()
    assert info["image_labels"][3] == "normal" and info["categories"] == {
        1: "benign",
        2: "malignant",
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(res))
    o2, _ = corloc_from_coco(tmp_path / "gt.json", tmp_path / "pred.json", class_aware=False)
    assert o2.hits.tolist() == [1, 0, 1, 0, 1]
    bad = [dict(res[0], image_id=77)]
    with pytest.raises(DataError, match="no image with this id"):
        corloc_from_coco(gt, bad)


# ---------------------------------------------------------------------- bootstrap
def _fixed(hits: list[int]) -> CorLocOutcomes:
    n = len(hits)
    return CorLocOutcomes(
        tuple(range(n)), np.asarray(hits), np.ones(n, dtype=np.int64), 0, "top1", True, 0.5
    )


def test_bootstrap_by_hand() -> None:
    o = _fixed([1, 0, 1])
    r = bootstrap_ci(o, n_boot=4, seed=7)
    rng = np.random.Generator(np.random.PCG64(7))
    idx = rng.integers(0, 3, size=(4, 3))
    vals = np.array([1, 0, 1])[idx].sum(axis=1) / 3
    low, high = np.quantile(vals, [(1 - 0.95) / 2, (1 + 0.95) / 2])
    assert (r["ci_low"], r["ci_high"]) == (low, high)
    assert r["corloc"] == pytest.approx(2 / 3) and (r["images"], r["correct"]) == (3, 2)
    assert bootstrap_ci(o, n_boot=4, seed=7) == r  # seeded: same answer
    all_right = bootstrap_ci(_fixed([1] * 5), n_boot=50)
    assert all_right["ci_low"] == all_right["ci_high"] == 1.0  # the CI is the point


def test_bootstrap_does_not_depend_on_the_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    o = _fixed([1, 0, 0, 1, 1, 1, 0])
    a = bootstrap_ci(o, n_boot=10, seed=3)
    monkeypatch.setattr(corloc_mod, "_CHUNK", 3)
    assert bootstrap_ci(o, n_boot=10, seed=3) == a


@pytest.mark.parametrize(
    ("correct", "paper_low", "paper_high"),
    [(338, 81.00, 88.00), (282, 66.00, 75.00), (320, 76.00, 83.75)],
)
def test_bootstrap_matches_the_papers_intervals(
    correct: int, paper_low: float, paper_high: float
) -> None:
    # Shin et al. 2019, Tables IV-V: CorLoc 84.50 / 70.50 / 80.00 on 400 lesion images
    r = bootstrap_ci(_fixed([1] * correct + [0] * (400 - correct)))
    assert r["corloc"] * 400 == correct
    assert abs(100 * r["ci_low"] - paper_low) <= 0.51
    assert abs(100 * r["ci_high"] - paper_high) <= 0.51


def test_paired_comparison() -> None:
    a = _fixed([1, 1, 1, 0, 1, 0, 1, 1])
    b = _fixed([0, 1, 0, 0, 1, 1, 0, 0])
    r = paired_comparison(a, b, n_boot=200, seed=1)
    assert r["diff"] == pytest.approx(6 / 8 - 3 / 8) and r["discordant"] == 5
    assert r["p_paired_t"] == pytest.approx(stats.ttest_rel(a.per_image, b.per_image).pvalue)
    rng = np.random.Generator(np.random.PCG64(1))
    idx = rng.integers(0, 8, size=(200, 8))
    d = (a.hits[idx].sum(1) - b.hits[idx].sum(1)) / 8
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    assert r["p_bootstrap"] == pytest.approx(min(1.0, 2 * (1 + tail) / 201))
    va, vb = a.hits[idx].sum(1) / 8, b.hits[idx].sum(1) / 8  # the CorLocs of each resample
    assert [r["diff_ci_low"], r["diff_ci_high"]] == np.quantile(
        va - vb, [(1 - 0.95) / 2, (1 + 0.95) / 2]
    ).tolist()
    assert r["p_t_bootstrap"] == pytest.approx(stats.ttest_rel(va, vb).pvalue)
    same = paired_comparison(a, a, n_boot=100)
    assert same["diff"] == 0.0 and same["p_bootstrap"] == 1.0 and same["discordant"] == 0
    assert math.isnan(same["p_paired_t"]) and math.isnan(same["p_t_bootstrap"])
    all_vs_none = paired_comparison(_fixed([1] * 20), _fixed([0] * 20), n_boot=999)
    assert all_vs_none["p_bootstrap"] == pytest.approx(2 / 1000)
    assert all_vs_none["p_paired_t"] == 0.0 and all_vs_none["p_t_bootstrap"] == 0.0
    with pytest.raises(ValueError, match="same images"):
        paired_comparison(a, _fixed([1, 0]))
    with pytest.raises(ValueError, match="n_boot"):
        paired_comparison(a, b, n_boot=0)


# ---------------------------------------------------------------------- image-level AUC
def test_image_auc_by_hand() -> None:
    labels = ["normal", "benign", "malignant", "malignant"]
    r = image_auc(labels, {"normal": [0.9, 0.2, 0.3, 0.1], "malignant": [0.1, 0.4, 0.35, 0.8]})
    assert r["AUC/normal"] == 1.0
    assert r["AUC/malignant"] == 0.75  # 3 of 4 (positive, negative) pairs ordered
    assert r["AUC/malignant_vs_benign"] == 0.5
    assert r["AUC"] == pytest.approx(0.875)
    with pytest.raises(ValueError, match="3 values for 4 images"):
        image_auc(labels, {"normal": [0.1, 0.2, 0.3]})


def test_image_scores_from_detections_by_hand() -> None:
    res = [
        {"image_id": 1, "category_id": 1, "score": 0.7},
        {"image_id": 1, "category_id": 2, "score": 0.2},
        {"image_id": 1, "category_id": 1, "score": 0.9},
        {"image_id": 9, "category_id": 1, "score": 0.99},  # not an image of the list
    ]
    s = image_scores_from_detections([1, 2], res, {1: "benign", 2: "malignant"})
    assert s == {"normal": [pytest.approx(0.1), 1.0], "benign": [0.9, 0.0], "malignant": [0.2, 0.0]}


def test_load_image_scores(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    p.write_text(json.dumps([{"image_id": 1, "scores": {"benign": 0.3, "malignant": 0.6}}]))
    assert load_image_scores(p, [1], ["benign"]) == {"benign": [0.3]}
    with pytest.raises(DataError, match="no scores for this image"):
        load_image_scores(p, [1, 2], ["benign"])
    with pytest.raises(DataError, match="must be a finite number"):
        load_image_scores(p, [1], ["normal"])
    p.write_text("[{")
    with pytest.raises(DataError, match="json"):
        load_image_scores(p, [1], ["benign"])


def test_report_keys_and_values(tmp_path: Path) -> None:
    gt, res = _coco_case()
    r = corloc_report(gt, res, n_boot=100, compare_with=res)
    assert r["CorLoc"] == pytest.approx(0.4) and r["CorLoc/any_class"] == pytest.approx(0.6)
    assert r["CorLoc_ci_low"] <= 0.4 <= r["CorLoc_ci_high"]
    assert (r["CorLoc/images"], r["CorLoc/images_without_lesion"]) == (5, 1)
    assert r["image_AUC/source"].startswith("detections")
    assert set(r) >= {"image_AUC/normal", "image_AUC/benign", "image_AUC/malignant"}
    assert r["vs_B/diff"] == 0.0 and r["vs_B/p_bootstrap"] == 1.0
    assert r["CorLoc/rule"] == "top1"
    r2 = corloc_report(gt, res, n_boot=10, rule="score_threshold")
    assert r2["CorLoc"] == pytest.approx(0.6) and r2["CorLoc/rule"] == "score_threshold 0.5"
