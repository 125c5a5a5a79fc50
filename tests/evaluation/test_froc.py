"""FROC / CPM: hand-computed cases, an independent DeepLesion-style matcher, MONAI and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssmd.evaluation import DEFAULT_FP_RATES, froc, froc_curve, froc_from_coco, froc_match
from ssmd.evaluation.froc import FP, IGNORED, TP
from ssmd.utils.errors import DataError


def t(rows: list[list[float]], dims: int = 2) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 2 * dims)


# ----------------------------------------------------------------------------- hand cases


def test_hand_case_two_images_three_lesions_five_predictions() -> None:
    # Image A: lesions a1 [0,0,10,10], a2 [20,20,30,30].  Image B: lesion b1 [0,0,10,10].
    # Predictions, pooled by score:
    #   .9 A [0,0,10,10]        IoU(a1) = 1            -> TP (a1)
    #   .8 B [50,50,60,60]      hits nothing           -> FP
    #   .7 A [1,1,10,10]        IoU(a1) = 81/100, a1 already detected -> ignored
    #   .6 B [0,0,10,9]         IoU(b1) = 0.9          -> TP (b1)
    #   .5 A [100,100,110,110]  hits nothing           -> FP
    # a2 is never found. Curve (FPs/image, sensitivity), one point per counted score:
    #   (0, 0) start; .9 -> (0, 1/3); .8 -> (1/2, 1/3); .6 -> (1/2, 2/3); .5 -> (1, 2/3).
    # np.interp: 1/8 and 1/4 lie between (0, 1/3) and (1/2, 1/3) -> 1/3; at 1/2 the
    # last point with x = 1/2 counts -> 2/3; 1 -> 2/3; 2, 4, 8 beyond the curve -> 2/3.
    # CPM = (2 * 1/3 + 5 * 2/3) / 7 = 4/7.
    gt = [t([[0, 0, 10, 10], [20, 20, 30, 30]]), t([[0, 0, 10, 10]])]
    boxes = [
        t([[0, 0, 10, 10], [1, 1, 10, 10], [100, 100, 110, 110]]),
        t([[50, 50, 60, 60], [0, 0, 10, 9]]),
    ]
    scores = [torch.tensor([0.9, 0.7, 0.5]), torch.tensor([0.8, 0.6])]
    res = froc(gt, boxes, scores)
    assert res.match is not None
    assert res.match.status.tolist() == [TP, IGNORED, FP, FP, TP]
    np.testing.assert_allclose(res.fps_per_image, [0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(res.sensitivity, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    expected = {
        0.125: 1 / 3,
        0.25: 1 / 3,
        0.5: 2 / 3,
        1.0: 2 / 3,
        2.0: 2 / 3,
        4.0: 2 / 3,
        8.0: 2 / 3,
    }
    assert res.sensitivities == pytest.approx(expected, abs=1e-12)
    assert res.cpm == pytest.approx(4 / 7, abs=1e-12)
    assert (res.num_images, res.num_lesions) == (2, 3)
    assert list(res.to_dict()) == [
        "sensitivity@0.125",
        "sensitivity@0.25",
        "sensitivity@0.5",
        "sensitivity@1",
        "sensitivity@2",
        "sensitivity@4",
        "sensitivity@8",
        "CPM",
    ]
    assert res.to_dict()["CPM"] == res.cpm


def test_duplicates_count_as_fp_would_lower_sensitivity_at_low_rates() -> None:
    # Guard that the duplicate is really ignored: if it were an FP, the curve would
    # reach 1/2 FP per image one prediction earlier. Same data as above.
    gt = [t([[0, 0, 10, 10], [20, 20, 30, 30]]), t([[0, 0, 10, 10]])]
    boxes = [
        t([[0, 0, 10, 10], [1, 1, 10, 10], [100, 100, 110, 110]]),
        t([[50, 50, 60, 60], [0, 0, 10, 9]]),
    ]
    scores = [torch.tensor([0.9, 0.7, 0.5]), torch.tensor([0.8, 0.6])]
    fps, _, _ = froc_curve(froc_match(gt, boxes, scores))
    assert fps[-1] == 1.0  # 2 FPs / 2 images, not 3 / 2


def test_center_rule_versus_iou_rule() -> None:
    # Lesion [0,0,10,10]. Prediction .9 [0,0,16,16]: IoU 100/256 = 0.39 (miss under
    # "iou"), centre (8, 8) inside the lesion (hit under "center"). Prediction .8
    # [4,4,6,6]: IoU 0.04, centre (5, 5) inside -> a duplicate under "center".
    # iou:    2 FPs, 0 TPs -> sensitivity 0 everywhere.
    # center: .9 TP, .8 ignored -> curve (0,0), (0,1) -> sensitivity 1 everywhere.
    gt = [t([[0, 0, 10, 10]])]
    boxes = [t([[0, 0, 16, 16], [4, 4, 6, 6]])]
    scores = [torch.tensor([0.9, 0.8])]
    by_iou = froc(gt, boxes, scores, hit="iou")
    by_centre = froc(gt, boxes, scores, hit="center")
    assert by_iou.cpm == 0.0
    assert by_iou.match is not None and by_iou.match.status.tolist() == [FP, FP]
    assert by_centre.cpm == 1.0
    assert by_centre.match is not None and by_centre.match.status.tolist() == [TP, IGNORED]
    # The IoU threshold is configurable: at 0.3 the first prediction is a hit.
    assert froc(gt, boxes, scores, iou_threshold=0.3).sensitivities[8.0] == 1.0


def test_one_prediction_detects_one_lesion() -> None:
    # Two overlapping lesions; the first prediction has IoU >= 0.5 with both
    # (A: 100/105, B: 105/110) and detects only the better one, B. The second
    # (lower score, same box) then detects A instead of being a duplicate.
    gt = [t([[0, 0, 10, 10], [0, 0, 10, 11]])]
    boxes = [t([[0, 0, 10, 10.5], [0, 0, 10, 10.5]])]
    m = froc_match(gt, boxes, [torch.tensor([0.9, 0.8])])
    assert m.status.tolist() == [TP, TP]
    np.testing.assert_allclose(m.lesion_scores, [0.8, 0.9], rtol=1e-6)
    _, sens, _ = froc_curve(m)
    np.testing.assert_allclose(sens, [0, 0.5, 1.0])


def test_tied_scores_form_one_operating_point() -> None:
    # Image 1: TP at .7; image 2 (no lesion): FP at .7. One threshold admits both:
    # curve (0, 0) -> (1/2, 1). np.interp is linear between them: at 1/4 -> 1/2,
    # at 1/8 -> 1/4 (MONAI's compute_froc_score does the same).
    gt = [t([[0, 0, 10, 10]]), t([])]
    boxes = [t([[0, 0, 10, 10]]), t([[0, 0, 10, 10]])]
    scores = [torch.tensor([0.7]), torch.tensor([0.7])]
    res = froc(gt, boxes, scores)
    np.testing.assert_allclose(res.fps_per_image, [0, 0.5])
    np.testing.assert_allclose(res.sensitivity, [0, 1])
    assert res.sensitivities[0.125] == pytest.approx(0.25)
    assert res.sensitivities[0.25] == pytest.approx(0.5)
    assert res.sensitivities[1.0] == 1.0


def test_predictions_on_image_without_lesions_are_fps() -> None:
    # Image 1: one lesion found at .9. Images 2 and 3: no lesion, 2 and 1 predictions.
    # 3 FPs over 3 images -> the curve ends at 1 FP/image.
    gt = [t([[0, 0, 10, 10]]), t([]), t([])]
    boxes = [t([[0, 0, 10, 10]]), t([[0, 0, 10, 10], [5, 5, 9, 9]]), t([[1, 1, 2, 2]])]
    scores = [torch.tensor([0.9]), torch.tensor([0.5, 0.4]), torch.tensor([0.3])]
    res = froc(gt, boxes, scores)
    np.testing.assert_allclose(res.fps_per_image, [0, 0, 1 / 3, 2 / 3, 1.0])
    assert res.sensitivities[0.125] == 1.0


def test_no_predictions_gives_zero_sensitivity() -> None:
    res = froc(
        [t([[0, 0, 10, 10]]), t([[5, 5, 8, 8]])], [t([]), t([])], [torch.zeros(0), torch.zeros(0)]
    )
    np.testing.assert_array_equal(res.fps_per_image, [0.0])
    np.testing.assert_array_equal(res.sensitivity, [0.0])
    assert res.cpm == 0.0
    assert all(v == 0.0 for v in res.sensitivities.values())


def test_no_lesions_at_all_raises() -> None:
    with pytest.raises(ValueError, match="0 GT lesions in 2 images"):
        froc([t([]), t([])], [t([[0, 0, 1, 1]]), t([])], [torch.tensor([0.5]), torch.zeros(0)])


def test_3d_boxes() -> None:
    # Image 1: lesion [0,0,0,10,10,10]; .9 [0,0,0,10,10,8] IoU 0.8 -> TP;
    #          .8 [50,50,50,60,60,60] -> FP.
    # Image 2: lesion [0,0,0,4,4,4]; .7 [0,0,0,4,4,3] IoU 0.75 -> TP.
    # Curve: (0,0), (0,1/2), (1/2,1/2), (1/2,1). Rates 1/8, 1/4 -> 1/2; 1/2 .. 8 -> 1.
    # CPM = (2 * 1/2 + 5 * 1) / 7 = 6/7.
    gt = [t([[0, 0, 0, 10, 10, 10]], 3), t([[0, 0, 0, 4, 4, 4]], 3)]
    boxes = [t([[0, 0, 0, 10, 10, 8], [50, 50, 50, 60, 60, 60]], 3), t([[0, 0, 0, 4, 4, 3]], 3)]
    scores = [torch.tensor([0.9, 0.8]), torch.tensor([0.7])]
    res = froc(gt, boxes, scores)
    assert res.cpm == pytest.approx(6 / 7, abs=1e-12)
    # Centre rule in 3D: the FP's centre (55,55,55) is outside; same result.
    assert froc(gt, boxes, scores, hit="center").cpm == pytest.approx(6 / 7, abs=1e-12)


def test_ignore_regions() -> None:
    # Lesion [0,0,10,10]; ignore region [100,100,150,150].
    # .95 [110,110,130,130] lies fully inside the region -> ignored (not an FP);
    # .9 hits the lesion. Without the region the .95 box is an FP.
    gt = [t([[0, 0, 10, 10]])]
    boxes = [t([[110, 110, 130, 130], [0, 0, 10, 10]])]
    scores = [torch.tensor([0.95, 0.9])]
    with_region = froc(gt, boxes, scores, ignore_boxes=[t([[100, 100, 150, 150]])])
    without = froc(gt, boxes, scores)
    assert with_region.match is not None and with_region.match.status.tolist() == [IGNORED, TP]
    assert with_region.fps_per_image[-1] == 0.0
    assert without.fps_per_image[-1] == 1.0
    # Centre rule: the centre (120, 120) is inside the region.
    centre = froc(gt, boxes, scores, hit="center", ignore_boxes=[t([[100, 100, 150, 150]])])
    assert centre.match is not None and centre.match.status.tolist() == [IGNORED, TP]


def test_froc_from_coco_with_iscrowd() -> None:
    # Same geometry as test_ignore_regions, as COCO; a third image has only an FP.
    gt = {
        "images": [{"id": 1}, {"id": 2}],
        "categories": [{"id": 1, "name": "lesion"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 100, 50, 50], "iscrowd": 1},
        ],
    }
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [110, 110, 20, 20], "score": 0.95},
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5},
    ]
    res = froc_from_coco(gt, results)
    assert res.num_lesions == 1  # the crowd region is not a lesion
    assert res.num_images == 2
    np.testing.assert_allclose(res.fps_per_image, [0, 0, 0.5])
    np.testing.assert_allclose(res.sensitivity, [0, 1, 1])
    with pytest.raises(DataError, match="category_ids"):
        froc_from_coco(gt, results, category_ids=[3])
    with pytest.raises(DataError, match=r"\[0\].image_id"):
        froc_from_coco(gt, [dict(results[0], image_id=9)])


def test_froc_from_coco_equals_froc_on_tensors() -> None:
    rng = np.random.default_rng(5)
    gt_boxes, boxes, scores = _random_case(rng, dims=2)
    images = [{"id": i + 1} for i in range(len(gt_boxes))]
    anns: list[dict] = []
    results: list[dict] = []
    for i, (g, pb, ps) in enumerate(zip(gt_boxes, boxes, scores, strict=True)):
        for row in g.tolist():
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": [*row[:2], row[2] - row[0], row[3] - row[1]],
                }
            )
        for row, sc in zip(pb.tolist(), ps.tolist(), strict=True):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": [*row[:2], row[2] - row[0], row[3] - row[1]],
                    "score": sc,
                }
            )
    # A second category that the filter must drop.
    results.append({"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.99})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1}, {"id": 2}]}
    a = froc_from_coco(gt, results, category_ids=[1])
    b = froc(gt_boxes, boxes, scores)
    np.testing.assert_allclose(a.fps_per_image, b.fps_per_image)
    np.testing.assert_allclose(a.sensitivity, b.sensitivity, atol=1e-12)
    assert a.cpm == pytest.approx(b.cpm, abs=1e-12)
    assert froc_from_coco(gt, results).fps_per_image[1] > 0  # the 0.99 FP now counts first


# ----------------------------------------------------------------------------- validation


def test_bad_inputs_name_field_and_value() -> None:
    gt = [t([[0, 0, 10, 10]])]
    with pytest.raises(DataError, match=r"pred_boxes/pred_scores"):
        froc(gt, [t([]), t([])], [torch.zeros(0)])
    with pytest.raises(DataError, match=r"pred_scores\[0\].*nan"):
        froc(gt, [t([[0, 0, 1, 1]])], [torch.tensor([float("nan")])])
    with pytest.raises(DataError, match=r"pred_boxes\[0\].*\[5\.0, 0\.0, 1\.0, 1\.0\]"):
        froc(gt, [t([[5, 0, 1, 1]])], [torch.tensor([0.5])])
    with pytest.raises(DataError, match=r"pred_scores\[0\]"):
        froc(gt, [t([[0, 0, 1, 1]])], [torch.tensor([0.5, 0.4])])
    with pytest.raises(DataError, match=r"pred_boxes\[0\].*3D boxes where the other inputs are 2D"):
        froc(gt, [t([[0, 0, 0, 1, 1, 1]], 3)], [torch.tensor([0.5])])
    with pytest.raises(ValueError, match="hit"):
        froc(gt, [t([])], [torch.zeros(0)], hit="distance")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fp_rates"):
        froc(gt, [t([])], [torch.zeros(0)], fp_rates=[0.0, 1.0])


# ----------------------------------------------------------------------------- references


def _random_case(
    rng: np.random.Generator, dims: int = 2, n_images: int | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Non-overlapping lesions (one per 100-px grid cell) with jittered and random predictions.

    Includes images without lesions and images without predictions; the last lesion
    of image 0 never gets a prediction near it, so at least one lesion is missed.
    """
    n = n_images or int(rng.integers(3, 9))
    gts, boxes, scores = [], [], []
    for i in range(n):
        n_gt = 0 if i == 1 else int(rng.integers(1, 7))
        cells = rng.choice(64, size=n_gt + 1, replace=False)
        g, b = [], []
        for k, cell in enumerate(cells):
            origin = np.array([cell % 8, cell // 8, (cell * 7) % 5][:dims], dtype=np.float64) * 100
            lo = origin + rng.uniform(5, 30, dims)
            hi = lo + rng.uniform(15, 60, dims)
            if k < n_gt:
                g.append(np.r_[lo, hi])
            if i == 2 or (i == 0 and k == n_gt - 1):
                continue  # image 2 has no predictions; image 0's last lesion is missed
            if k < n_gt:
                for _ in range(int(rng.integers(0, 4))):  # 0-3 boxes per lesion: duplicates
                    size = hi - lo
                    jlo = lo + rng.normal(0, 0.15, dims) * size
                    jhi = hi + rng.normal(0, 0.15, dims) * size
                    b.append(np.r_[jlo, np.maximum(jhi, jlo + 1)])
            else:
                for _ in range(int(rng.integers(0, 3))):  # false positives in an empty cell
                    b.append(np.r_[lo, hi])
        gts.append(torch.tensor(np.array(g), dtype=torch.float64).reshape(-1, 2 * dims))
        boxes.append(torch.tensor(np.array(b), dtype=torch.float64).reshape(-1, 2 * dims))
        scores.append(torch.tensor(rng.uniform(0.01, 1.0, len(b)), dtype=torch.float64))
    return gts, boxes, scores


def _iou_np(box: np.ndarray, gts: np.ndarray) -> np.ndarray:
    d = box.shape[0] // 2
    lo = np.maximum(gts[:, :d], box[:d])
    hi = np.minimum(gts[:, d:], box[d:])
    inter = np.clip(hi - lo, 0, None).prod(axis=1)
    union = (box[d:] - box[:d]).prod() + (gts[:, d:] - gts[:, :d]).prod(axis=1) - inter
    return inter / union


def _deeplesion_style_points(
    gts: list[torch.Tensor], boxes: list[torch.Tensor], scores: list[torch.Tensor], iou_th: float
) -> list[tuple[float, float]]:
    """The pooled matching loop of the DeepLesion evaluation script (Yan et al.), rewritten.

    Predictions of all images sorted by score; one that overlaps no lesion by
    ``iou_th`` is a miss (FP); otherwise every not-yet-hit lesion it overlaps is hit.
    One curve point per prediction.
    """
    items = sorted(
        (
            (float(s), i, b.numpy())
            for i in range(len(boxes))
            for b, s in zip(boxes[i], scores[i], strict=True)
        ),
        key=lambda x: -x[0],
    )
    hits = [np.zeros(len(g), dtype=bool) for g in gts]
    n_gt = sum(len(g) for g in gts)
    n_hits = n_miss = 0
    points = [(0.0, 0.0)]
    for _, i, box in items:
        overlaps = _iou_np(box, gts[i].numpy()) if len(gts[i]) else np.zeros(0)
        if overlaps.size == 0 or overlaps.max() < iou_th:
            n_miss += 1
        else:
            for j in np.flatnonzero(overlaps >= iou_th):
                if not hits[i][j]:
                    hits[i][j] = True
                    n_hits += 1
        points.append((n_miss / len(gts), n_hits / n_gt))
    return points


@pytest.mark.parametrize("seed", range(12))
def test_matching_equals_deeplesion_style_loop(seed: int) -> None:
    # With non-overlapping lesions the DeepLesion rule "a box detects every lesion it
    # overlaps" and ours "one lesion per box" coincide; duplicates are ignored in both.
    rng = np.random.default_rng(seed)
    gts, boxes, scores = _random_case(rng, dims=2 if seed % 2 else 3)
    ours = froc(gts, boxes, scores)
    theirs = _deeplesion_style_points(gts, boxes, scores, 0.5)
    deduped = [p for k, p in enumerate(theirs) if k == 0 or p != theirs[k - 1]]
    np.testing.assert_allclose(ours.fps_per_image, [p[0] for p in deduped], atol=1e-12)
    np.testing.assert_allclose(ours.sensitivity, [p[1] for p in deduped], atol=1e-12)


def test_random_cases_have_duplicates_misses_and_fps() -> None:
    statuses = []
    for seed in range(12):
        gts, boxes, scores = _random_case(np.random.default_rng(seed))
        m = froc_match(gts, boxes, scores)
        statuses.append(m.status)
        assert np.isnan(m.lesion_scores).any()
    all_status = np.concatenate(statuses)
    assert (all_status == IGNORED).sum() >= 5
    assert (all_status == FP).sum() >= 5
    assert (all_status == TP).sum() >= 5


@pytest.mark.parametrize("hit", ["iou", "center"])
@pytest.mark.parametrize("seed", range(10))
def test_curve_and_cpm_equal_monai(seed: int, hit: str) -> None:
    metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(100 + seed)
    gts, boxes, scores = _random_case(rng, dims=2 if seed % 2 else 3)
    ours = froc(gts, boxes, scores, hit=hit)  # type: ignore[arg-type]
    m = ours.match
    assert m is not None
    # MONAI's inputs: one probability per target (0 when missed), FP probabilities.
    tp_probs = np.nan_to_num(m.lesion_scores, nan=0.0)
    fp_probs = m.scores[m.status == FP]
    assert (tp_probs == 0).any()  # a missed lesion: MONAI's skipped lowest threshold is that 0
    fps, sens = metrics.compute_froc_curve_data(fp_probs, tp_probs, m.num_lesions, m.num_images)
    np.testing.assert_array_equal(ours.fps_per_image, fps[::-1])
    np.testing.assert_array_equal(ours.sensitivity, sens[::-1])
    score = metrics.compute_froc_score(fps, sens, eval_thresholds=DEFAULT_FP_RATES)
    assert ours.cpm == pytest.approx(float(score), abs=1e-12)


def test_monai_drops_lowest_operating_point_when_nothing_is_missed() -> None:
    # The one documented difference: every lesion found, so MONAI's all_probs[1:]
    # skips the lowest real score (.6, a TP) -- its curve never reaches sensitivity 1.
    metrics = pytest.importorskip("monai.metrics")
    gt = [t([[0, 0, 10, 10]]), t([[0, 0, 10, 10]])]
    boxes = [t([[0, 0, 10, 10], [50, 50, 60, 60]]), t([[0, 0, 10, 10]])]
    scores = [torch.tensor([0.9, 0.8]), torch.tensor([0.6])]
    ours = froc(gt, boxes, scores)
    assert ours.sensitivity[-1] == 1.0
    m = ours.match
    assert m is not None
    _, sens = metrics.compute_froc_curve_data(m.scores[m.status == FP], m.lesion_scores, 2, 2)
    assert sens.max() == 0.5
    assert len(sens) == len(ours.sensitivity) - 1


@pytest.mark.parametrize("seed", range(6))
def test_sensitivities_equal_luna16_style_roc_curve(seed: int) -> None:
    # LUNA16's noduleCADEvaluation builds the curve from sklearn's roc_curve over the
    # candidates: fps = fpr * #FP / #images, sens = tpr * #detected / #lesions, then np.interp.
    roc_curve = pytest.importorskip("sklearn.metrics").roc_curve
    rng = np.random.default_rng(200 + seed)
    gts, boxes, scores = _random_case(rng, dims=3, n_images=6)
    ours = froc(gts, boxes, scores, hit="center")
    m = ours.match
    assert m is not None
    counted = m.status != IGNORED
    labels = m.status[counted] == TP
    fpr, tpr, _ = roc_curve(labels, m.scores[counted], drop_intermediate=False)
    fps = fpr * (~labels).sum() / m.num_images
    sens = tpr * labels.sum() / m.num_lesions
    luna = np.interp(DEFAULT_FP_RATES, fps, sens)
    np.testing.assert_allclose(list(ours.sensitivities.values()), luna, atol=1e-12)
