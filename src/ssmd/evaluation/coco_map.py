"""COCO-style box AP/AR, computed by pycocotools' ``COCOeval`` with a configurable ``maxDets``.

The matching, precision/recall accumulation and the 101-point interpolation are
pycocotools' own (``COCOeval.evaluate`` + ``accumulate``); this module validates the
input, runs the engine with its prints captured, and reads the 12 summary numbers out
of ``COCOeval.eval`` itself.

Why not ``COCOeval.summarize()``: it hard-codes ``maxDets=100`` for the first number
(``stats[0] = _summarize(1)``, pycocotools 2.0.x), so with ``params.maxDets = [1, 10, 1000]``
it finds no column for 100 and reports ``AP = -1``. detectron2 works around the same bug
with ``COCOevalMaxDets``; here :func:`_summarize` is a line-for-line port of pycocotools'
``_summarize`` (mean of the entries ``> -1`` of the precision/recall slice; ``-1`` when
there are none) that looks up the column of ``max_dets`` for every AP and for ``AR``.
With ``max_dets=100`` the result equals ``summarize()``'s ``stats`` exactly.

Why ``max_dets=1000`` by default: nuclei images hold up to ~375 objects, and at
pycocotools' 100 detections per image the recall of such an image cannot exceed
100/375, which caps AP and AR for a reason that has nothing to do with the detector.

Conventions kept from pycocotools (so numbers stay comparable with published ones):

* ``-1`` means "undefined": no (non-ignored) GT in that category/area range at all
  (e.g. ``APl`` when no object is larger than 96²). It is not a score.
* ``iscrowd=1`` GT boxes are ignore regions: a detection matched to one is neither
  TP nor FP, and the IoU with a crowd box is ``intersection / detection area``.
* Images with no GT still count: their detections are false positives. Images with
  no detections simply contribute no detections.
* An **empty prediction list** gives ``AP = AR = 0`` for every category that has GT
  (``-1`` where there is none). pycocotools' ``loadRes([])`` raises ``IndexError``, so
  this module builds the empty result set itself and runs the same ``COCOeval`` on it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ssmd.evaluation.coco_io import (
    PRED_SOURCE,
    CocoGroundTruth,
    load_coco_gt,
    load_coco_results,
)
from ssmd.structures.boxes import xyxy_to_xywh
from ssmd.utils.errors import DataError

__all__ = [
    "DEFAULT_MAX_DETS",
    "STAT_KEYS",
    "Backend",
    "COCOEvaluator",
    "coco_ap",
    "predictions_to_coco_results",
]

Backend = Literal["pycocotools", "faster"]

DEFAULT_MAX_DETS = 1000

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR@1", "AR@10", "AR", "ARs", "ARm", "ARl")
"""The result keys in the order of pycocotools' ``COCOeval.stats``.

``AP``, ``AP50``, ``AP75``, ``APs/m/l``, ``AR`` and ``ARs/m/l`` are at ``max_dets``
detections per image; ``AR@1`` and ``AR@10`` at 1 and 10.
"""

# (is AP, IoU threshold or None for the .50:.95 mean, area range, which maxDets slot)
_STAT_SPECS: tuple[tuple[bool, float | None, str, int], ...] = (
    (True, None, "all", 2),
    (True, 0.5, "all", 2),
    (True, 0.75, "all", 2),
    (True, None, "small", 2),
    (True, None, "medium", 2),
    (True, None, "large", 2),
    (False, None, "all", 0),
    (False, None, "all", 1),
    (False, None, "all", 2),
    (False, None, "small", 2),
    (False, None, "medium", 2),
    (False, None, "large", 2),
)


def _engine(backend: Backend) -> tuple[Any, Any]:
    """The ``(COCO, COCOeval)`` classes of ``backend``, imported lazily."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster":
        try:
            from faster_coco_eval import COCO as FasterCOCO
            from faster_coco_eval import COCOeval_faster
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "backend='faster' needs the optional package faster-coco-eval "
                "(pip install faster-coco-eval); or use backend='pycocotools'"
            ) from e
        return FasterCOCO, COCOeval_faster
    raise ValueError(f"unknown COCO backend {backend!r}; expected 'pycocotools' or 'faster'")


def _summarize(
    ev: Mapping[str, Any], params: Any, ap: bool, iou_thr: float | None, area: str, max_det: int
) -> float:
    """One summary number, as pycocotools' ``COCOeval.summarize._summarize`` computes it.

    ``precision`` is ``(T, R, K, A, M)`` and ``recall`` ``(T, K, A, M)``; the slice is
    averaged over the entries ``> -1`` and ``-1`` is returned when there are none.
    """
    aind = [i for i, lbl in enumerate(params.areaRngLbl) if lbl == area]
    mind = [i for i, m in enumerate(params.maxDets) if m == max_det]
    s = np.asarray(ev["precision"] if ap else ev["recall"])
    if iou_thr is not None:
        t = np.where(iou_thr == np.asarray(params.iouThrs))[0]
        s = s[t]
    s = s[:, :, :, aind, mind] if ap else s[:, :, aind, mind]  # (T, R, K, 1, 1) or (T, K, 1, 1)
    valid = s[s > -1]
    return -1.0 if valid.size == 0 else float(np.mean(valid))


def _run_cocoeval(
    gt: CocoGroundTruth, results: list[dict[str, Any]], max_dets: int, backend: Backend
) -> tuple[Mapping[str, Any], Any]:
    """Run ``evaluate()`` + ``accumulate()`` with stdout captured; return ``(eval, params)``."""
    coco_cls, eval_cls = _engine(backend)
    # Shallow copies: COCOeval writes 'ignore'/'_ignore' into the GT annotation dicts.
    dataset = dict(gt.dataset)
    dataset["annotations"] = [dict(a) for a in gt.dataset["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_cls()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            # pycocotools' loadRes([]) raises IndexError; an empty result set is what
            # loadRes would build for [] (faster-coco-eval's loadRes does exactly this).
            coco_dt = coco_cls()
            coco_dt.dataset = {
                "images": list(dataset["images"]),
                "categories": [dict(c) for c in dataset["categories"]],
                "annotations": [],
            }
            coco_dt.createIndex()
        if backend == "faster":
            ev = eval_cls(coco_gt, coco_dt, iouType="bbox", print_function=lambda *a, **k: None)
        else:
            ev = eval_cls(coco_gt, coco_dt, iouType="bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
    return ev.eval, ev.params


def _evaluate(
    gt: CocoGroundTruth,
    results: list[dict[str, Any]],
    max_dets: int,
    backend: Backend,
    per_category: bool,
) -> dict[str, float]:
    ev, params = _run_cocoeval(gt, results, max_dets, backend)
    slots = list(params.maxDets)  # sorted by COCOeval.evaluate: [1, 10, max_dets]
    out: dict[str, float] = {}
    for key, (ap, thr, area, slot) in zip(STAT_KEYS, _STAT_SPECS, strict=True):
        out[key] = _summarize(ev, params, ap, thr, area, slots[slot])
    out["max_dets"] = float(max_dets)
    if per_category:
        # detectron2's _derive_coco_results: AP@[.5:.95] per category, area 'all', max_dets.
        precision = np.asarray(ev["precision"])  # (T, R, K, A, M)
        m = slots.index(max_dets)
        names = {c["id"]: str(c.get("name", c["id"])) for c in gt.dataset["categories"]}
        for k, cid in enumerate(params.catIds):
            p = precision[:, :, k, 0, m]
            valid = p[p > -1]
            out[f"AP-{names[cid]}"] = -1.0 if valid.size == 0 else float(np.mean(valid))
    return out


def _check_max_dets(max_dets: int) -> None:
    if isinstance(max_dets, bool) or not isinstance(max_dets, int) or max_dets < 10:
        raise ValueError(
            f"max_dets must be an int >= 10 (it is the last of pycocotools' maxDets [1, 10, max_dets]), "
            f"got {max_dets!r}"
        )


def coco_ap(
    gt: Mapping[str, Any] | str | Path,
    predictions: Sequence[Mapping[str, Any]] | str | Path,
    *,
    max_dets: int = DEFAULT_MAX_DETS,
    backend: Backend = "pycocotools",
    per_category: bool = False,
) -> dict[str, float]:
    """COCO box AP/AR of ``predictions`` against ``gt``, equal to pycocotools' numbers.

    Runs pycocotools' ``COCOeval`` (``iouType='bbox'``) with ``params.maxDets =
    [1, 10, max_dets]`` and reads the 12 standard numbers at ``max_dets`` (see the
    module docstring for why ``summarize()`` is not called and what ``-1`` means).

    Args:
        gt: COCO ground truth (dict or JSON path). ``iscrowd=1`` boxes are ignore regions.
        predictions: COCO results (list or JSON path): ``image_id``, ``category_id``,
            ``bbox`` as ``[x, y, w, h]`` in pixels, ``score``. May be empty.
        max_dets: detections kept per image (highest scores first); AP and AR are
            reported at this cap. Must be >= 10.
        backend: ``"pycocotools"`` (reference) or ``"faster"`` (faster-coco-eval's C++
            ``COCOeval_faster``, same numbers, optional dependency).
        per_category: also report ``AP-<category name>`` for every category.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR@1", "AR@10", "AR", "ARs",
        "ARm", "ARl", "max_dets"}`` (values in [0, 1], or -1 where undefined).

    Raises:
        DataError: bad GT or predictions (names the file, field and value), e.g. a
            prediction for an image or category that is not in ``gt``, a missing field,
            a NaN or negative-size box.
    """
    _check_max_dets(max_dets)
    _engine(backend)  # fail early on a missing optional backend
    gt_data = load_coco_gt(gt)
    results = load_coco_results(predictions, gt_data)
    return _evaluate(gt_data, results, max_dets, backend, per_category)


def _to_cpu(x: Tensor | np.ndarray | Sequence[float]) -> Tensor:
    return x.detach().cpu() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def predictions_to_coco_results(
    image_ids: Sequence[Any],
    predictions: Sequence[Mapping[str, Tensor]],
    label_to_category: Mapping[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Detector outputs to a COCO result list.

    Boxes go from ``xyxy`` (ssmd's convention, absolute pixels) to COCO ``[x, y, w, h]``
    with :func:`ssmd.structures.boxes.xyxy_to_xywh`; no rounding is applied (the float32
    values become Python floats exactly).

    Args:
        image_ids: the COCO image id of each prediction, same length as ``predictions``.
        predictions: per image ``{"boxes": Tensor[N, 4] xyxy, "scores": Tensor[N],
            "labels": Tensor[N]}`` as torchvision detectors return in eval mode.
        label_to_category: contiguous label (``1..K``) -> COCO ``category_id``; the
            identity when ``None``.

    Returns:
        ``[{"image_id", "category_id", "bbox", "score"}, ...]``.

    Raises:
        DataError: mismatched lengths or shapes, or a label missing from the mapping.
    """
    if len(image_ids) != len(predictions):
        raise DataError(
            PRED_SOURCE,
            "image_ids",
            len(image_ids),
            f"got {len(image_ids)} image ids for {len(predictions)} predictions",
        )
    out: list[dict[str, Any]] = []
    for i, (image_id, pred) in enumerate(zip(image_ids, predictions, strict=True)):
        for key in ("boxes", "scores", "labels"):
            if key not in pred:
                raise DataError(PRED_SOURCE, f"predictions[{i}].{key}", None, f"missing {key!r}")
        boxes = _to_cpu(pred["boxes"]).to(torch.float64)
        scores = _to_cpu(pred["scores"]).reshape(-1).tolist()
        labels = _to_cpu(pred["labels"]).reshape(-1).tolist()
        if boxes.numel() == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise DataError(
                PRED_SOURCE,
                f"predictions[{i}].boxes",
                tuple(boxes.shape),
                "must be Tensor[N, 4] (2D xyxy)",
            )
        if not (len(scores) == len(labels) == boxes.shape[0]):
            raise DataError(
                PRED_SOURCE,
                f"predictions[{i}]",
                (boxes.shape[0], len(scores), len(labels)),
                "boxes, scores and labels must have the same length N",
            )
        xywh = xyxy_to_xywh(boxes).tolist()
        if isinstance(image_id, Tensor):
            image_id = image_id.item()
        for box, score, label in zip(xywh, scores, labels, strict=True):
            label = int(label)
            if label_to_category is None:
                category = label
            elif label in label_to_category:
                category = int(label_to_category[label])
            else:
                raise DataError(
                    PRED_SOURCE,
                    f"predictions[{i}].labels",
                    label,
                    "label has no entry in label_to_category",
                )
            out.append(
                {"image_id": image_id, "category_id": category, "bbox": box, "score": float(score)}
            )
    return out


class COCOEvaluator:
    """detectron2-style evaluator: ``reset()``, ``process()`` per batch, ``evaluate()``.

    Mirrors ``detectron2.evaluation.COCOEvaluator``'s life cycle, on top of :func:`coco_ap`.
    The ground truth is validated once, at construction.

    Args:
        gt: COCO ground truth (dict or JSON path).
        max_dets: detections per image kept for AP/AR (see :func:`coco_ap`).
        label_to_category: contiguous model label -> COCO ``category_id``; identity if ``None``.
        backend: ``"pycocotools"`` or ``"faster"``.
        per_category: also report ``AP-<category name>``.
    """

    def __init__(
        self,
        gt: Mapping[str, Any] | str | Path,
        max_dets: int = DEFAULT_MAX_DETS,
        label_to_category: Mapping[int, int] | None = None,
        backend: Backend = "pycocotools",
        per_category: bool = False,
    ) -> None:
        _check_max_dets(max_dets)
        _engine(backend)
        self.gt = load_coco_gt(gt)
        self.max_dets = max_dets
        self.label_to_category = dict(label_to_category) if label_to_category is not None else None
        self.backend: Backend = backend
        self.per_category = per_category
        self._results: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Forget every processed prediction."""
        self._results = []

    def process(
        self, image_ids: Sequence[Any], predictions: Sequence[Mapping[str, Tensor]]
    ) -> None:
        """Add one batch: ``image_ids[i]`` is the COCO id of ``predictions[i]``.

        ``predictions[i]`` is ``{"boxes": Tensor[N, 4] xyxy, "scores": Tensor[N],
        "labels": Tensor[N]}``.
        """
        self._results.extend(
            predictions_to_coco_results(image_ids, predictions, self.label_to_category)
        )

    def evaluate(self) -> dict[str, float]:
        """COCO AP/AR of everything processed since the last :meth:`reset` (see :func:`coco_ap`)."""
        results = load_coco_results(self._results, self.gt)
        return _evaluate(self.gt, results, self.max_dets, self.backend, self.per_category)
