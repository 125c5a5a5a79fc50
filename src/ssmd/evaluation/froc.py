"""FROC: lesion sensitivity at fixed average false positives per image, and the CPM.

The FROC curve plots lesion-level sensitivity against the average number of false
positives per image as the score threshold sweeps over all predictions pooled across
images. The *competition performance metric* (CPM) is the mean sensitivity at a set of
FP rates, by default ``1/8, 1/4, 1/2, 1, 2, 4, 8`` (LUNA16; DeepLesion reports the
same rates).

Matching, per image (:func:`froc_match`):

1. Predictions are visited by score, highest first (a stable sort, so ties keep
   input order).
2. A prediction *hits* a GT lesion under the chosen rule: ``hit="iou"`` -- IoU >=
   ``iou_threshold`` (0.5 by default, the DeepLesion convention); ``hit="center"`` --
   the predicted box's centre lies inside the GT box, edges included (the LUNA16
   convention, with the box in place of the nodule sphere).
3. If it hits at least one not-yet-detected lesion it is a **TP** and detects one of
   them: the one with the highest IoU (``iou``) or the nearest centre (``center``).
   One prediction detects at most one lesion, so each lesion is counted once and
   sensitivity can never exceed 1.
4. If every lesion it hits is already detected, it is **ignored** -- neither TP nor
   FP. This is what all three reference scripts do: LUNA16's ``noduleCADEvaluation``
   drops the extra candidates of a found nodule, MONAI's ``compute_fp_tp_probs_nd``
   keeps only the maximum probability per target and counts as FP only detections
   outside every target, and the DeepLesion script of Yan et al. (``FROC`` /
   ``sens_at_FP``) counts a miss only when ``overlaps.max() < iou_th``. (The DeepLesion
   script additionally lets one box detect *every* unhit lesion it overlaps; step 3
   above does not -- the two differ only when GT boxes overlap each other by more
   than the threshold.)
5. A prediction that hits no lesion but hits an ignore region (COCO ``iscrowd``
   boxes in :func:`froc_from_coco`) is **ignored**; "hits" means: at least
   ``iou_threshold`` of the prediction's area lies inside the region (pycocotools'
   crowd IoU, ``intersection / prediction area``) for ``iou``, centre inside for ``center``.
6. Anything else is an **FP**, including every prediction on an image without GT.

Because matching is greedy by score, a prediction's status does not depend on the
threshold, so the curve (:func:`froc_curve`) has one point per distinct score of a
counted (TP or FP) prediction, plus ``(0, 0)``: at threshold ``t`` it counts the TPs
and FPs with score ``>= t``.

Interpolation (:func:`interpolate_sensitivity`) follows MONAI's
``monai.metrics.compute_froc_score`` exactly: ``np.interp(fp_rates, fps_per_image,
sensitivity)`` on that curve. Past the last point (more FPs than the detector ever
makes) the sensitivity stays at its last value, as in MONAI, LUNA16 and the DeepLesion
script. The curve points equal MONAI's ``compute_froc_curve_data`` fed with our
per-lesion scores (0 for missed lesions) and FP scores, with one deliberate
difference: MONAI (from the CAMELYON16 script) skips the lowest distinct score,
which is right when that score is the 0 of a missed lesion but drops a real
operating point when every lesion is detected; this module keeps it.

No GT lesion at all makes sensitivity undefined: :func:`froc` raises ``ValueError``
rather than return NaN or 0, so that an empty evaluation split cannot pass unnoticed.
No predictions at all gives sensitivity 0 at every rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ssmd.evaluation.coco_io import load_coco_gt, load_coco_results
from ssmd.structures.boxes import box_iou, xywh_to_xyxy
from ssmd.utils.errors import DataError

__all__ = [
    "DEFAULT_FP_RATES",
    "FP",
    "IGNORED",
    "TP",
    "FROCMatch",
    "FROCResult",
    "HitRule",
    "froc",
    "froc_curve",
    "froc_from_coco",
    "froc_match",
    "froc_result",
    "interpolate_sensitivity",
]

HitRule = Literal["iou", "center"]

DEFAULT_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Average FPs per image at which sensitivity is read (LUNA16 / DeepLesion)."""

TP, FP, IGNORED = 1, 0, -1
"""Per-prediction status codes in :attr:`FROCMatch.status`."""

_ARGS = "<froc arguments>"


ArrayLike = Tensor | np.ndarray | Sequence[Any]


@dataclass(frozen=True)
class FROCMatch:
    """Per-prediction outcome of :func:`froc_match`, predictions of all images pooled.

    Attributes:
        scores: ``(P,)`` prediction scores.
        status: ``(P,)`` :data:`TP`, :data:`FP` or :data:`IGNORED`.
        image_index: ``(P,)`` index of each prediction's image.
        lesion_scores: ``(L,)`` score of the prediction that detected each lesion,
            ``NaN`` for missed lesions (images in order, lesions in input order).
        num_images: number of images, including those without GT or predictions.
    """

    scores: np.ndarray
    status: np.ndarray
    image_index: np.ndarray
    lesion_scores: np.ndarray
    num_images: int

    @property
    def num_lesions(self) -> int:
        """Number of GT lesions (ignore regions excluded)."""
        return int(self.lesion_scores.shape[0])


@dataclass(frozen=True)
class FROCResult:
    """An FROC curve with the sensitivities read off it and their mean (CPM).

    Attributes:
        fps_per_image: ``(C,)`` average FPs per image, non-decreasing, starting at 0.
        sensitivity: ``(C,)`` lesion sensitivity at the same thresholds, non-decreasing.
        thresholds: ``(C,)`` score threshold of each point (``inf`` for the first).
        sensitivities: FP rate -> interpolated sensitivity.
        cpm: mean of ``sensitivities`` (competition performance metric).
        num_images: images evaluated.
        num_lesions: GT lesions evaluated.
    """

    fps_per_image: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    sensitivities: dict[float, float]
    cpm: float
    num_images: int
    num_lesions: int
    match: FROCMatch | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, float]:
        """``{"sensitivity@0.125": ..., ..., "sensitivity@8": ..., "CPM": ...}``."""
        out = {f"sensitivity@{rate:g}": value for rate, value in self.sensitivities.items()}
        out["CPM"] = self.cpm
        return out


def _as_array(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _boxes(x: ArrayLike, name: str, dims: int | None) -> np.ndarray:
    """``x`` as a float64 ``(N, 2D)`` array; an empty input becomes ``(0, 2D)``."""
    a = _as_array(x)
    if a.size == 0:
        return np.zeros((0, 2 * (dims or 2)), dtype=np.float64)
    if a.ndim != 2 or a.shape[1] not in (4, 6):
        raise DataError(_ARGS, name, tuple(a.shape), "boxes must be (N, 4) 2D or (N, 6) 3D xyxy")
    if dims is not None and a.shape[1] != 2 * dims:
        raise DataError(
            _ARGS,
            name,
            tuple(a.shape),
            f"{a.shape[1] // 2}D boxes where the other inputs are {dims}D",
        )
    if not np.isfinite(a).all():
        raise DataError(
            _ARGS, name, a[~np.isfinite(a).all(axis=1)][0].tolist(), "boxes must be finite"
        )
    d = a.shape[1] // 2
    if (a[:, d:] < a[:, :d]).any():
        bad = a[(a[:, d:] < a[:, :d]).any(axis=1)][0].tolist()
        raise DataError(
            _ARGS, name, bad, "boxes must be xyxy with x2 >= x1 (and y2 >= y1, z2 >= z1)"
        )
    return a


def _inter_over_first(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a ∩ b| / |a|`` for ``(N, 2D)`` and ``(M, 2D)`` boxes -> ``(N, M)`` (0 where ``|a| = 0``)."""
    d = a.shape[1] // 2
    lo = np.maximum(a[:, None, :d], b[None, :, :d])  # (N, M, D)
    hi = np.minimum(a[:, None, d:], b[None, :, d:])  # (N, M, D)
    inter = np.clip(hi - lo, 0, None).prod(axis=-1)  # (N, M)
    area = np.clip(a[:, d:] - a[:, :d], 0, None).prod(axis=-1)  # (N,)
    return np.where(area[:, None] > 0, inter / np.maximum(area[:, None], 1e-300), 0.0)


def _centre_inside(centres: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Whether each centre ``(N, D)`` lies in each box ``(M, 2D)``, edges included -> ``(N, M)``."""
    d = centres.shape[1]
    c = centres[:, None, :]  # (N, 1, D)
    inside = (c >= boxes[None, :, :d]) & (c <= boxes[None, :, d:])  # (N, M, D)
    return np.asarray(inside.all(axis=-1), dtype=bool)


def _match_image(
    gt: np.ndarray,
    preds: np.ndarray,
    scores: np.ndarray,
    ignore: np.ndarray,
    hit: HitRule,
    iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy score-ordered matching in one image -> ``(status (P,), detected_by (G,))``.

    ``detected_by[g]`` is the index of the prediction that detected lesion ``g``, or -1.
    """
    p, g = preds.shape[0], gt.shape[0]
    status = np.full(p, FP, dtype=np.int8)
    detected_by = np.full(g, -1, dtype=np.int64)
    if p == 0:
        return status, detected_by
    d = preds.shape[1] // 2
    if hit == "iou":
        quality = box_iou(torch.from_numpy(preds), torch.from_numpy(gt)).numpy()  # (P, G)
        candidate = quality >= iou_threshold
        covered = _inter_over_first(preds, ignore) >= iou_threshold  # (P, R)
        in_ignore = np.asarray(covered.any(axis=1), dtype=bool)  # (P,)
    else:
        centres = (preds[:, :d] + preds[:, d:]) / 2  # (P, D)
        gt_centres = (gt[:, :d] + gt[:, d:]) / 2  # (G, D)
        candidate = _centre_inside(centres, gt)  # (P, G)
        quality = -np.linalg.norm(centres[:, None, :] - gt_centres[None, :, :], axis=-1)  # (P, G)
        in_ignore = np.asarray(_centre_inside(centres, ignore).any(axis=1), dtype=bool)  # (P,)
    detected = np.zeros(g, dtype=bool)
    for i in np.argsort(-scores, kind="mergesort"):
        hits = candidate[i]
        if not hits.any():
            if in_ignore[i]:
                status[i] = IGNORED
            continue
        free = hits & ~detected
        if not free.any():
            status[i] = IGNORED  # a duplicate on an already detected lesion
            continue
        j = int(np.argmax(np.where(free, quality[i], -np.inf)))
        detected[j] = True
        detected_by[j] = i
        status[i] = TP
    return status, detected_by


def froc_match(
    gt_boxes: Sequence[ArrayLike],
    pred_boxes: Sequence[ArrayLike],
    pred_scores: Sequence[ArrayLike],
    *,
    hit: HitRule = "iou",
    iou_threshold: float = 0.5,
    ignore_boxes: Sequence[ArrayLike] | None = None,
) -> FROCMatch:
    """Label every prediction TP, FP or ignored (rules in the module docstring).

    Args:
        gt_boxes: per image ``Tensor[G_i, 2D]`` xyxy lesions (pixels; voxels in 3D).
        pred_boxes: per image ``Tensor[P_i, 2D]`` xyxy predictions.
        pred_scores: per image ``Tensor[P_i]`` scores.
        hit: ``"iou"`` or ``"center"``.
        iou_threshold: IoU needed for a hit under ``hit="iou"`` (also the covered
            fraction needed to fall in an ignore region).
        ignore_boxes: per image ``Tensor[R_i, 2D]`` ignore regions, or ``None``.

    Raises:
        DataError: mismatched list lengths or shapes, non-finite values, a 2D/3D mix.
    """
    if hit not in ("iou", "center"):
        raise ValueError(f"hit must be 'iou' or 'center', got {hit!r}")
    if not (0.0 < iou_threshold <= 1.0):
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    n = len(gt_boxes)
    if len(pred_boxes) != n or len(pred_scores) != n:
        raise DataError(
            _ARGS,
            "pred_boxes/pred_scores",
            (n, len(pred_boxes), len(pred_scores)),
            "gt_boxes, pred_boxes and pred_scores need one entry per image",
        )
    if ignore_boxes is not None and len(ignore_boxes) != n:
        raise DataError(_ARGS, "ignore_boxes", len(ignore_boxes), f"need one entry per image ({n})")

    dims: int | None = None
    for group, name in (
        (gt_boxes, "gt_boxes"),
        (pred_boxes, "pred_boxes"),
        (ignore_boxes or [], "ignore_boxes"),
    ):
        for i, b in enumerate(group):
            a = _as_array(b)
            if a.size:
                dims = _boxes(a, f"{name}[{i}]", dims).shape[1] // 2

    all_scores: list[np.ndarray] = []
    all_status: list[np.ndarray] = []
    all_image: list[np.ndarray] = []
    lesion_scores: list[np.ndarray] = []
    for i in range(n):
        gt = _boxes(gt_boxes[i], f"gt_boxes[{i}]", dims)
        preds = _boxes(pred_boxes[i], f"pred_boxes[{i}]", dims)
        scores = _as_array(pred_scores[i]).reshape(-1)
        if scores.shape[0] != preds.shape[0]:
            raise DataError(
                _ARGS,
                f"pred_scores[{i}]",
                scores.shape[0],
                f"need one score per predicted box ({preds.shape[0]})",
            )
        if not np.isfinite(scores).all():
            raise DataError(
                _ARGS, f"pred_scores[{i}]", scores[~np.isfinite(scores)][0], "scores must be finite"
            )
        ignore = (
            _boxes(ignore_boxes[i], f"ignore_boxes[{i}]", dims)
            if ignore_boxes is not None
            else np.zeros((0, gt.shape[1]))
        )
        status, detected_by = _match_image(gt, preds, scores, ignore, hit, iou_threshold)
        all_scores.append(scores)
        all_status.append(status)
        all_image.append(np.full(preds.shape[0], i, dtype=np.int64))
        found = np.full(detected_by.shape[0], np.nan)
        found[detected_by >= 0] = scores[detected_by[detected_by >= 0]]
        lesion_scores.append(found)
    return FROCMatch(
        scores=np.concatenate(all_scores) if n else np.zeros(0),
        status=np.concatenate(all_status) if n else np.zeros(0, dtype=np.int8),
        image_index=np.concatenate(all_image) if n else np.zeros(0, dtype=np.int64),
        lesion_scores=np.concatenate(lesion_scores) if n else np.zeros(0),
        num_images=n,
    )


def froc_curve(match: FROCMatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The FROC curve of a matching: ``(fps_per_image, sensitivity, thresholds)``, each ``(C,)``.

    Point 0 is ``(0, 0)`` at threshold ``inf``; then one point per distinct score of
    a TP or FP prediction, highest first, counting the TPs and FPs scoring ``>=`` it.

    Raises:
        ValueError: no GT lesion at all (sensitivity undefined) or no images.
    """
    if match.num_images == 0:
        raise ValueError("FROC needs at least one image")
    if match.num_lesions == 0:
        raise ValueError(
            f"FROC sensitivity is undefined: 0 GT lesions in {match.num_images} images "
            "(check the split and the category filter)"
        )
    counted = match.status != IGNORED
    scores = match.scores[counted]
    is_tp = match.status[counted] == TP
    order = np.argsort(-scores, kind="mergesort")
    scores, is_tp = scores[order], is_tp[order]
    tp_cum = np.cumsum(is_tp)
    fp_cum = np.cumsum(~is_tp)
    last_of_group = (
        np.r_[scores[1:] != scores[:-1], True] if scores.size else np.zeros(0, dtype=bool)
    )
    fps = np.r_[0, fp_cum[last_of_group]] / float(match.num_images)
    sens = np.r_[0, tp_cum[last_of_group]] / float(match.num_lesions)
    thresholds = np.r_[np.inf, scores[last_of_group]]
    return fps, sens, thresholds


def interpolate_sensitivity(
    fps_per_image: np.ndarray, sensitivity: np.ndarray, fp_rates: Iterable[float]
) -> np.ndarray:
    """Sensitivity at each FP rate: ``np.interp`` on the curve, as MONAI's ``compute_froc_score``.

    ``fps_per_image`` must be non-decreasing (as :func:`froc_curve` returns it; MONAI
    reverses its own decreasing arrays to get the same order).
    """
    rates = np.asarray(list(fp_rates), dtype=np.float64)
    return np.interp(rates, fps_per_image, sensitivity)


def _check_rates(fp_rates: Iterable[float]) -> tuple[float, ...]:
    rates = tuple(float(r) for r in fp_rates)
    if not rates or not all(math.isfinite(r) and r > 0 for r in rates):
        raise ValueError(f"fp_rates must be a non-empty list of positive numbers, got {rates!r}")
    return rates


def _result(match: FROCMatch, fp_rates: tuple[float, ...]) -> FROCResult:
    fps, sens, thr = froc_curve(match)
    values = interpolate_sensitivity(fps, sens, fp_rates)
    sensitivities = {rate: float(v) for rate, v in zip(fp_rates, values, strict=True)}
    return FROCResult(
        fps_per_image=fps,
        sensitivity=sens,
        thresholds=thr,
        sensitivities=sensitivities,
        cpm=float(np.mean(values)),
        num_images=match.num_images,
        num_lesions=match.num_lesions,
        match=match,
    )


def froc_result(match: FROCMatch, fp_rates: Iterable[float] = DEFAULT_FP_RATES) -> FROCResult:
    """The curve, sensitivities at ``fp_rates`` and CPM of a matching made elsewhere (e.g. the
    LUNA16 sphere rule of :mod:`ssmd.evaluation.luna16`), read off as :func:`froc` does."""
    return _result(match, _check_rates(fp_rates))


def froc(
    gt_boxes: Sequence[ArrayLike],
    pred_boxes: Sequence[ArrayLike],
    pred_scores: Sequence[ArrayLike],
    fp_rates: Iterable[float] = DEFAULT_FP_RATES,
    hit: HitRule = "iou",
    iou_threshold: float = 0.5,
    ignore_boxes: Sequence[ArrayLike] | None = None,
) -> FROCResult:
    """FROC curve, sensitivities at ``fp_rates`` and CPM of single-class detections.

    Args:
        gt_boxes: per image ``Tensor[G_i, 4]`` (2D) or ``Tensor[G_i, 6]`` (3D) xyxy
            lesions in absolute pixels/voxels; an image may have none.
        pred_boxes: per image ``Tensor[P_i, 2D]`` xyxy predictions; may be empty.
        pred_scores: per image ``Tensor[P_i]``.
        fp_rates: average FPs per image to read sensitivity at.
        hit: ``"iou"`` (IoU >= ``iou_threshold``, DeepLesion) or ``"center"``
            (predicted centre inside the GT box, LUNA16).
        iou_threshold: see ``hit``.
        ignore_boxes: optional per-image ignore regions (see the module docstring).

    Returns:
        The curve and the numbers read off it (matching and interpolation as in the
        module docstring: MONAI's ``compute_froc_score``).

    Raises:
        ValueError: no GT lesion in any image.
        DataError: malformed boxes or scores.
    """
    rates = _check_rates(fp_rates)
    match = froc_match(
        gt_boxes,
        pred_boxes,
        pred_scores,
        hit=hit,
        iou_threshold=iou_threshold,
        ignore_boxes=ignore_boxes,
    )
    return _result(match, rates)


def froc_from_coco(
    gt: Mapping[str, Any] | str | Path,
    results: Sequence[Mapping[str, Any]] | str | Path,
    fp_rates: Iterable[float] = DEFAULT_FP_RATES,
    hit: HitRule = "iou",
    iou_threshold: float = 0.5,
    category_ids: Iterable[int] | None = None,
) -> FROCResult:
    """FROC from a COCO ground truth and a COCO result list.

    Every image of ``gt`` counts (also those without annotations or predictions).
    GT annotations with ``iscrowd=1`` are not lesions but ignore regions: a
    prediction that detects no lesion and falls in one is dropped, not counted as FP.
    FROC is class-agnostic: lesions and predictions of the selected categories
    (all when ``category_ids`` is ``None``) are pooled and matched regardless of
    category.

    Raises:
        DataError: invalid GT or results (see :func:`ssmd.evaluation.coco_ap`), or a
            ``category_ids`` entry that is not a GT category.
        ValueError: no lesion in the selected categories.
    """
    rates = _check_rates(fp_rates)
    gt_data = load_coco_gt(gt)
    preds = load_coco_results(results, gt_data)
    if category_ids is None:
        cats = set(gt_data.category_ids)
    else:
        cats = set()
        for c in category_ids:
            if c not in gt_data.category_ids:
                raise DataError(
                    gt_data.source, "category_ids", c, "not a category of the ground truth"
                )
            cats.add(int(c))
    index = {iid: k for k, iid in enumerate(gt_data.image_ids)}
    n = len(index)
    lesions: list[list[list[float]]] = [[] for _ in range(n)]
    ignore: list[list[list[float]]] = [[] for _ in range(n)]
    boxes: list[list[list[float]]] = [[] for _ in range(n)]
    scores: list[list[float]] = [[] for _ in range(n)]
    for ann in gt_data.dataset["annotations"]:
        if ann["category_id"] in cats:
            (ignore if ann["iscrowd"] else lesions)[index[ann["image_id"]]].append(ann["bbox"])
    for r in preds:
        if r["category_id"] in cats:
            k = index[r["image_id"]]
            boxes[k].append(r["bbox"])
            scores[k].append(r["score"])

    def xyxy(xywh: list[list[float]]) -> Tensor:
        t = torch.tensor(xywh, dtype=torch.float64).reshape(-1, 4)
        return xywh_to_xyxy(t)

    match = froc_match(
        [xyxy(b) for b in lesions],
        [xyxy(b) for b in boxes],
        [torch.tensor(s, dtype=torch.float64) for s in scores],
        hit=hit,
        iou_threshold=iou_threshold,
        ignore_boxes=[xyxy(b) for b in ignore],
    )
    return _result(match, rates)
