"""CorLoc (correct localization) with bootstrap confidence intervals and paired tests.

The metric of Shin et al., "Joint Weakly and Semi-Supervised Deep Learning for
Localization and Classification of Masses in Breast Ultrasound Images" (IEEE TMI 2019):
"the ratio of images with intersection over union with ground truth higher than 0.5",
with 95% CIs from "bootstrapping by randomly sampling test images with replacement" and
p-values from a paired t-test (Tables II, IV, V).

The exact rule here (:func:`corloc_outcomes`), boxes ``xyxy`` absolute pixels:

* **Which images**: those with at least one ground-truth lesion. Images without a box
  (BUSI's normal images) are not counted -- CorLoc is undefined there; they are reported as
  ``images_without_lesion``. (The paper's CIs fit 400 counted images, its 200 benign plus
  200 malignant test images, not 600 with the normal ones; its released evaluation counts
  the images with a box of the class, too.)
* **Which detection**: the single highest-scoring detection (``rule="top1"``, the WSOD
  definition of Deselaers et al. 2012 that the paper's MIL "mass of interest" mirrors);
  ties keep the earlier detection in input order.
* **Class**: with ``class_aware=True`` (default) there is one trial per lesion class present
  in the image, using the top detection *of that class*, and it must hit a lesion *of that
  class* -- the per-class CorLoc of WSOD, pooled over classes as the paper's code pools it
  (correct trials / trials). With ``class_aware=False``: one trial per image, the top
  detection of any class against any lesion: localization alone (the class is then judged
  by the image-level AUC). BUSI images hold lesions of one class, so trials = images.
* **Hit**: ``IoU >= iou_threshold`` (0.5) with at least one lesion.
* ``rule="score_threshold"`` reproduces the authors' released script instead (``voc_eval_bus``
  in github.com/syshin1014/wssdl_bus): a trial is correct if *any* detection of the class
  with ``score >= score_threshold`` (0.5) hits a lesion of the class. Two small differences
  remain: the script tests ``IoU > 0.5`` with the VOC "+1 pixel" box sizes.

Statistics, all over the counted images (an image's trials stay together):

* :func:`bootstrap_ci`: ``n_boot`` resamples of the images with replacement
  (``numpy.random.Generator(PCG64(seed)).integers(0, n, size=(n_boot, n))``, drawn in
  chunks of whole resamples, so the result does not depend on the chunk size); the CorLoc
  of each resample is ``sum(hits) / sum(trials)``; the CI is the percentile interval
  ``numpy.quantile(values, [(1 - c) / 2, (1 + c) / 2])`` (linear interpolation).
* :func:`paired_comparison` of methods A and B on the same images: the same resamples for
  both; the difference ``d = CorLoc_A - CorLoc_B``, its percentile CI, and three p-values
  (two-sided): ``p_bootstrap = min(1, 2 (1 + min(#{d* <= 0}, #{d* >= 0})) / (n_boot + 1))``
  (the percentile-bootstrap test: below ``1 - c`` about when the CI of ``d`` excludes 0);
  ``p_paired_t``: ``scipy.stats.ttest_rel`` on the per-image scores (hits / trials) --
  the paired t-test over test images; and ``p_t_bootstrap`` the paper's reading,
  ``ttest_rel`` on the ``n_boot`` paired bootstrap CorLoc values. The last one shrinks
  without bound as ``n_boot`` grows (the resamples are not independent data) and is given
  only to compare with the paper's p-value column; do not use it to decide anything.
* :func:`image_auc`: image-level one-vs-rest ROC AUC of ``P_l(I)`` for each label ``l``
  (``N``, ``B``, ``M``), their mean, and malignant-vs-benign on the abnormal images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats

from ssmd.evaluation.classification import binary_auc
from ssmd.evaluation.coco_io import load_coco_gt, load_coco_results
from ssmd.evaluation.statistics import compare
from ssmd.structures.boxes import box_iou, xywh_to_xyxy
from ssmd.utils.errors import DataError

__all__ = [
    "DEFAULT_N_BOOT",
    "CorLocOutcomes",
    "CorLocRule",
    "bootstrap_ci",
    "corloc_from_coco",
    "corloc_outcomes",
    "corloc_report",
    "image_auc",
    "image_scores_from_detections",
    "load_image_scores",
    "paired_comparison",
]

CorLocRule = Literal["top1", "score_threshold"]

DEFAULT_N_BOOT = 10000
"""Bootstrap resamples (the paper does not say how many it drew)."""

_CHUNK = 1000  # resamples drawn and evaluated at once


def _as_boxes(x: Any, where: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=torch.float64)
    if t.numel() == 0:
        return torch.zeros((0, 4), dtype=torch.float64)
    if t.ndim != 2 or t.shape[1] != 4:
        raise ValueError(f"{where}: boxes must be (N, 4) xyxy, got shape {tuple(t.shape)}")
    return t


def _as_vector(x: Any, n: int, where: str, dtype: Any) -> np.ndarray:
    a = np.asarray(x, dtype=dtype).reshape(-1)
    if a.shape[0] != n:
        raise ValueError(f"{where}: {a.shape[0]} values for {n} boxes")
    return a


@dataclass(frozen=True)
class CorLocOutcomes:
    """Per-image CorLoc outcomes (see the module docstring for the rule).

    Attributes:
        image_ids: the counted images (those with a lesion), in input order.
        hits: correct trials per counted image (``int[n]``).
        trials: trials per counted image (``int[n]``; 1 unless class-aware with lesions of
            several classes).
        images_without_lesion: images given but not counted (no lesion box).
        rule: ``"top1"`` or ``"score_threshold"``.
        class_aware: whether the detection's class had to match.
        iou_threshold: the IoU a hit needs (``>=``).
    """

    image_ids: tuple[Any, ...]
    hits: np.ndarray
    trials: np.ndarray
    images_without_lesion: int
    rule: CorLocRule
    class_aware: bool
    iou_threshold: float

    @property
    def n_images(self) -> int:
        """Counted images."""
        return len(self.image_ids)

    @property
    def corloc(self) -> float:
        """Correct trials / trials (NaN when no image has a lesion)."""
        total = int(self.trials.sum())
        return float(self.hits.sum()) / total if total else float("nan")

    @property
    def per_image(self) -> np.ndarray:
        """``hits / trials`` of each counted image (0 or 1 for single-class images)."""
        return self.hits / self.trials


def corloc_outcomes(
    gt_boxes: Sequence[Any],
    gt_labels: Sequence[Any],
    pred_boxes: Sequence[Any],
    pred_scores: Sequence[Any],
    pred_labels: Sequence[Any],
    image_ids: Sequence[Any] | None = None,
    *,
    rule: CorLocRule = "top1",
    class_aware: bool = True,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
) -> CorLocOutcomes:
    """CorLoc outcome of every image (module docstring), one list entry per image.

    Args:
        gt_boxes: per image, ``(G, 4)`` xyxy lesion boxes (crowd/ignore regions excluded).
        gt_labels: per image, ``(G,)`` lesion classes.
        pred_boxes: per image, ``(P, 4)`` xyxy detections.
        pred_scores: per image, ``(P,)`` scores.
        pred_labels: per image, ``(P,)`` classes (same ids as ``gt_labels``).
        image_ids: per image, an id to report (default ``0..N-1``).
        rule: ``"top1"`` or ``"score_threshold"``.
        class_aware: require the detection's class to be the lesion's.
        iou_threshold: a hit needs ``IoU >= iou_threshold``.
        score_threshold: for ``rule="score_threshold"``: detections with ``score >=`` it.

    Raises:
        ValueError: lists of different lengths, bad shapes, or a bad rule / threshold.
    """
    n = len(gt_boxes)
    if not (len(gt_labels) == len(pred_boxes) == len(pred_scores) == len(pred_labels) == n):
        raise ValueError(
            f"per-image lists differ in length: gt_boxes {n}, gt_labels {len(gt_labels)}, "
            f"pred_boxes {len(pred_boxes)}, pred_scores {len(pred_scores)}, "
            f"pred_labels {len(pred_labels)}"
        )
    if rule not in ("top1", "score_threshold"):
        raise ValueError(f"rule = {rule!r}: expected 'top1' or 'score_threshold'")
    if not (math.isfinite(iou_threshold) and 0.0 < iou_threshold <= 1.0):
        raise ValueError(f"iou_threshold = {iou_threshold!r}: must lie in (0, 1]")
    ids = list(range(n)) if image_ids is None else list(image_ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} image ids for {n} images")
    kept: list[Any] = []
    hits: list[int] = []
    trials: list[int] = []
    skipped = 0
    for i in range(n):
        where = f"image {ids[i]!r}"
        g = _as_boxes(gt_boxes[i], f"{where} gt_boxes")  # (G, 4)
        gl = _as_vector(gt_labels[i], g.shape[0], f"{where} gt_labels", np.int64)
        if g.shape[0] == 0:
            skipped += 1
            continue
        p = _as_boxes(pred_boxes[i], f"{where} pred_boxes")  # (P, 4)
        ps = _as_vector(pred_scores[i], p.shape[0], f"{where} pred_scores", np.float64)
        pl = _as_vector(pred_labels[i], p.shape[0], f"{where} pred_labels", np.int64)
        if not np.isfinite(ps).all():
            raise ValueError(f"{where}: non-finite scores {ps.tolist()}")
        iou = box_iou(p, g).numpy() if p.shape[0] else np.zeros((0, g.shape[0]))  # (P, G)
        classes = sorted(set(gl.tolist())) if class_aware else [None]
        n_hit = 0
        for c in classes:
            det = np.ones(p.shape[0], dtype=bool) if c is None else pl == c  # (P,)
            les = np.ones(g.shape[0], dtype=bool) if c is None else gl == c  # (G,)
            if rule == "top1":
                cand = np.flatnonzero(det)
                if cand.size:
                    top = cand[np.argmax(ps[cand])]  # first maximum: ties keep input order
                    n_hit += int((iou[top, les] >= iou_threshold).any())
            else:
                sel = det & (ps >= score_threshold)
                n_hit += int((iou[np.ix_(sel, les)] >= iou_threshold).any())
        kept.append(ids[i])
        hits.append(n_hit)
        trials.append(len(classes))
    return CorLocOutcomes(
        image_ids=tuple(kept),
        hits=np.asarray(hits, dtype=np.int64),
        trials=np.asarray(trials, dtype=np.int64),
        images_without_lesion=skipped,
        rule=rule,
        class_aware=class_aware,
        iou_threshold=float(iou_threshold),
    )


def _check_boot(n_boot: int, confidence: float) -> None:
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 1:
        raise ValueError(f"n_boot = {n_boot!r}: need an integer >= 1")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence = {confidence!r}: must lie in (0, 1)")


def _resampled(
    hits: Sequence[np.ndarray], trials: np.ndarray, n_boot: int, seed: int
) -> list[np.ndarray]:
    """CorLoc of ``n_boot`` resamples of the images, for each hits vector (same resamples)."""
    n = trials.shape[0]
    rng = np.random.Generator(np.random.PCG64(seed))
    out: list[list[np.ndarray]] = [[] for _ in hits]
    done = 0
    while done < n_boot:
        b = min(_CHUNK, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))  # (b, n) image indices
        den = trials[idx].sum(axis=1)  # (b,)
        for k, h in enumerate(hits):
            out[k].append(h[idx].sum(axis=1) / den)
        done += b
    return [np.concatenate(v) for v in out]


def _check_paired(*outcomes: CorLocOutcomes) -> None:
    first = outcomes[0]
    for o in outcomes:
        if o.n_images == 0:
            raise ValueError("no image with a lesion: CorLoc is undefined")
        if o.image_ids != first.image_ids or not np.array_equal(o.trials, first.trials):
            raise ValueError(
                "paired comparison needs the same images (and trials) for both methods: "
                f"{o.n_images} vs {first.n_images} images"
            )


def bootstrap_ci(
    outcomes: CorLocOutcomes,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """CorLoc with its percentile bootstrap CI over the counted images (module docstring).

    Returns:
        ``{"corloc", "ci_low", "ci_high", "confidence", "n_boot", "seed", "images",
        "trials", "correct", "images_without_lesion"}``.

    Raises:
        ValueError: no counted image, or bad ``n_boot`` / ``confidence``.
    """
    _check_boot(n_boot, confidence)
    _check_paired(outcomes)
    (values,) = _resampled([outcomes.hits], outcomes.trials, n_boot, seed)
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {
        "corloc": outcomes.corloc,
        "ci_low": float(low),
        "ci_high": float(high),
        "confidence": confidence,
        "n_boot": n_boot,
        "seed": seed,
        "images": outcomes.n_images,
        "trials": int(outcomes.trials.sum()),
        "correct": int(outcomes.hits.sum()),
        "images_without_lesion": outcomes.images_without_lesion,
    }


def _paired_t(x: np.ndarray, y: np.ndarray, bootstrap: bool = False) -> float:
    """Two-sided paired t-test p-value; 0 / 0 (no difference at all) is NaN, c / 0 is 0."""
    d = x - y
    if d.size < 2:
        return float("nan")
    if np.all(d == d[0]):  # zero variance: t = 0 / 0 or +-inf (scipy warns and may say NaN)
        return float("nan") if d[0] == 0 else 0.0
    if bootstrap:
        return float(stats.ttest_rel(x, y).pvalue)
    return float(compare(x, y, "paired_t")["p_value"])


def paired_comparison(
    a: CorLocOutcomes,
    b: CorLocOutcomes,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare the CorLoc of methods A and B on the same images (module docstring).

    Returns:
        ``{"corloc_a", "corloc_b", "diff", "diff_ci_low", "diff_ci_high", "p_bootstrap",
        "p_paired_t", "p_t_bootstrap", "discordant", "images", "n_boot", "seed",
        "confidence"}``; ``discordant`` counts images where exactly one method is right
        (per-image scores differ). ``p_paired_t`` / ``p_t_bootstrap`` are NaN when the
        paired differences are all 0 (``t = 0 / 0``) and 0 when they are all the same
        non-zero value (``t`` infinite).

    Raises:
        ValueError: different images / trials, no counted image, bad ``n_boot``.
    """
    _check_boot(n_boot, confidence)
    _check_paired(a, b)
    va, vb = _resampled([a.hits, b.hits], a.trials, n_boot, seed)
    d = va - vb  # (n_boot,)
    diff = a.corloc - b.corloc
    low, high = np.quantile(d, [(1 - confidence) / 2, (1 + confidence) / 2])
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    p_boot = min(1.0, 2.0 * (1 + tail) / (n_boot + 1))
    p_t = _paired_t(a.per_image, b.per_image)
    p_tb = _paired_t(va, vb, bootstrap=True)
    return {
        "corloc_a": a.corloc,
        "corloc_b": b.corloc,
        "diff": diff,
        "diff_ci_low": float(low),
        "diff_ci_high": float(high),
        "p_bootstrap": p_boot,
        "p_paired_t": p_t,
        "p_t_bootstrap": p_tb,
        "discordant": int((a.per_image != b.per_image).sum()),
        "images": a.n_images,
        "n_boot": n_boot,
        "seed": seed,
        "confidence": confidence,
    }


# ---------------------------------------------------------------------- image-level AUC
def image_auc(labels: Sequence[str], scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Image-level ROC AUCs of ``P_l(I)`` (module docstring).

    Args:
        labels: image label of each image (e.g. ``"normal"``, ``"benign"``, ``"malignant"``).
        scores: ``{label: P_l(I) of each image}`` for the labels to score.

    Returns:
        ``AUC/<l>`` (``l`` vs all other images) for each ``l`` of ``scores``, ``AUC`` their
        mean over the defined ones, and ``AUC/malignant_vs_benign`` (``P_M`` among benign
        and malignant images) when both labels occur; NaN where one side is empty.
    """
    y = np.asarray(list(labels), dtype=object)
    out: dict[str, float] = {}
    for lab, s in scores.items():
        v = np.asarray(s, dtype=np.float64).reshape(-1)
        if v.shape[0] != y.shape[0]:
            raise ValueError(f"scores[{lab!r}] has {v.shape[0]} values for {y.shape[0]} images")
        out[f"AUC/{lab}"] = binary_auc(y == lab, v)
    defined = [v for v in out.values() if not math.isnan(v)]
    out["AUC"] = float(np.mean(defined)) if defined else float("nan")
    if "malignant" in scores:
        ab = (y == "benign") | (y == "malignant")
        pm = np.asarray(scores["malignant"], dtype=np.float64).reshape(-1)
        out["AUC/malignant_vs_benign"] = binary_auc(y[ab] == "malignant", pm[ab])
    return out


def image_scores_from_detections(
    image_ids: Sequence[Any],
    results: Sequence[Mapping[str, Any]],
    category_names: Mapping[int, str],
) -> dict[str, list[float]]:
    """``P_l(I)`` from a COCO detection list, for predictions without image-level scores.

    ``P_c(I)`` = the highest score of a detection of category ``c`` in the image (0 when
    none), and ``P_normal(I) = 1 - max_c P_c(I)``. This stands in for the paper's
    ``P_l(I) = p_l(x_MoI)`` (the class distribution of the mass of interest), which a
    COCO result list cannot carry; a method that has it should write an image-scores file
    (:func:`load_image_scores`).
    """
    pos = {iid: k for k, iid in enumerate(image_ids)}
    out = {name: [0.0] * len(pos) for name in category_names.values()}
    for r in results:
        k = pos.get(r["image_id"])
        name = category_names.get(int(r["category_id"]))
        if k is not None and name is not None:
            out[name][k] = max(out[name][k], float(r["score"]))
    top = [max((out[c][k] for c in out), default=0.0) for k in range(len(pos))]
    return {"normal": [1.0 - t for t in top], **out}


def load_image_scores(
    path: str | Path, image_ids: Sequence[Any], labels: Sequence[str]
) -> dict[str, list[float]]:
    """Read image-level scores: a JSON list of ``{"image_id", "scores": {label: p}}``.

    Every image of ``image_ids`` needs an entry with a finite score for every label of
    ``labels``.

    Raises:
        DataError: missing file, bad JSON, a missing image or label, a non-finite score.
    """
    import json

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(p, "file", str(p), "does not exist") from exc
    except json.JSONDecodeError as exc:
        raise DataError(p, "json", f"line {exc.lineno} column {exc.colno}", exc.msg) from exc
    if not isinstance(data, list):
        raise DataError(p, "<root>", type(data).__name__, "must be a list of objects")
    by_id: dict[Any, dict[str, float]] = {}
    for k, row in enumerate(data):
        if not isinstance(row, dict) or "image_id" not in row or "scores" not in row:
            raise DataError(p, f"[{k}]", row, "needs 'image_id' and 'scores'")
        sc = row["scores"]
        if not isinstance(sc, dict):
            raise DataError(p, f"[{k}].scores", sc, "must map labels to numbers")
        if row["image_id"] in by_id:
            raise DataError(p, f"[{k}].image_id", row["image_id"], "listed twice")
        by_id[row["image_id"]] = sc
    out: dict[str, list[float]] = {lab: [] for lab in labels}
    for iid in image_ids:
        if iid not in by_id:
            raise DataError(p, "image_id", iid, "no scores for this image of the ground truth")
        for lab in labels:
            v = by_id[iid].get(lab)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise DataError(p, f"image {iid!r}.scores.{lab}", v, "must be a finite number")
            out[lab].append(float(v))
    return out


# ---------------------------------------------------------------------- COCO input
def corloc_from_coco(
    gt: Mapping[str, Any] | str | Path,
    results: Sequence[Mapping[str, Any]] | str | Path,
    *,
    rule: CorLocRule = "top1",
    class_aware: bool = True,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
) -> tuple[CorLocOutcomes, dict[str, Any]]:
    """CorLoc outcomes from a COCO ground truth and a COCO result list (dicts or files).

    Lesions are the GT annotations with ``iscrowd = 0`` (bbox ``[x, y, w, h]`` converted to
    ``xyxy``); classes are category ids. Images are taken in GT order.

    Returns:
        ``(outcomes, info)`` where ``info`` holds ``image_ids`` (all GT images, in order),
        ``image_labels`` (each image's ``image_label`` field, or ``None`` when the GT has
        none), ``categories`` (``{id: name}``) and the validated ``results`` list.

    Raises:
        DataError: invalid GT or results (see :mod:`ssmd.evaluation.coco_io`).
    """
    g = load_coco_gt(gt)
    res = load_coco_results(results, g)
    ids = list(g.image_ids)
    pos = {iid: k for k, iid in enumerate(ids)}
    gtb: list[list[list[float]]] = [[] for _ in ids]
    gtl: list[list[int]] = [[] for _ in ids]
    for a in g.dataset["annotations"]:
        if a["iscrowd"]:
            continue
        k = pos[a["image_id"]]
        gtb[k].append(a["bbox"])
        gtl[k].append(int(a["category_id"]))
    pb: list[list[list[float]]] = [[] for _ in ids]
    ps: list[list[float]] = [[] for _ in ids]
    pl: list[list[int]] = [[] for _ in ids]
    for r in res:
        k = pos[r["image_id"]]
        pb[k].append(r["bbox"])
        ps[k].append(r["score"])
        pl[k].append(r["category_id"])

    def xyxy(b: list[list[float]]) -> torch.Tensor:
        if not b:
            return torch.zeros((0, 4), dtype=torch.float64)
        return xywh_to_xyxy(torch.tensor(b, dtype=torch.float64))  # (N, 4)

    outcomes = corloc_outcomes(
        [xyxy(b) for b in gtb],
        gtl,
        [xyxy(b) for b in pb],
        ps,
        pl,
        image_ids=ids,
        rule=rule,
        class_aware=class_aware,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
    )
    images = g.dataset["images"]
    labels = [im.get("image_label") for im in images]
    info = {
        "image_ids": ids,
        "image_labels": labels if all(isinstance(v, str) for v in labels) else None,
        "categories": {int(c["id"]): str(c.get("name", c["id"])) for c in g.dataset["categories"]},
        "results": res,
    }
    return outcomes, info


def corloc_report(
    gt: Mapping[str, Any] | str | Path,
    results: Sequence[Mapping[str, Any]] | str | Path,
    *,
    compare_with: Sequence[Mapping[str, Any]] | str | Path | None = None,
    image_scores: str | Path | None = None,
    rule: CorLocRule = "top1",
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything ``ssmd evaluate --corloc`` prints, as one flat dict.

    Keys: ``CorLoc`` (class-aware, the primary number) with ``CorLoc_ci_low`` /
    ``CorLoc_ci_high``; ``CorLoc/any_class`` (class-agnostic) with its CI; ``CorLoc/images``
    (counted), ``CorLoc/trials``, ``CorLoc/images_without_lesion``; with image labels in the
    GT (``image_label``, as ``ssmd data convert --format busi`` writes), ``image_AUC/<l>``,
    ``image_AUC`` and ``image_AUC/malignant_vs_benign`` of ``P_l(I)`` from ``image_scores``
    (:func:`load_image_scores`) or else from the detections
    (:func:`image_scores_from_detections`), with ``image_AUC/source`` saying which; with
    ``compare_with`` (method B's results on the same GT) the keys of
    :func:`paired_comparison` prefixed ``vs_B/`` (A is ``results``), class-aware.
    """
    kw: dict[str, Any] = {
        "rule": rule,
        "iou_threshold": iou_threshold,
        "score_threshold": score_threshold,
    }
    boot: dict[str, Any] = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
    aware, info = corloc_from_coco(gt, results, class_aware=True, **kw)
    agnostic, _ = corloc_from_coco(gt, info["results"], class_aware=False, **kw)
    ci = bootstrap_ci(aware, **boot)
    ci_any = bootstrap_ci(agnostic, **boot)
    out: dict[str, Any] = {
        "CorLoc": ci["corloc"],
        "CorLoc_ci_low": ci["ci_low"],
        "CorLoc_ci_high": ci["ci_high"],
        "CorLoc/any_class": ci_any["corloc"],
        "CorLoc/any_class_ci_low": ci_any["ci_low"],
        "CorLoc/any_class_ci_high": ci_any["ci_high"],
        "CorLoc/images": ci["images"],
        "CorLoc/trials": ci["trials"],
        "CorLoc/images_without_lesion": ci["images_without_lesion"],
        "CorLoc/rule": rule if rule == "top1" else f"score_threshold {score_threshold:g}",
        "CorLoc/iou_threshold": iou_threshold,
        "CorLoc/confidence": confidence,
        "CorLoc/n_boot": n_boot,
        "CorLoc/seed": seed,
    }
    labels = info["image_labels"]
    if labels is not None:
        names = sorted(
            set(labels), key=lambda v: (v not in _LABEL_ORDER, _LABEL_ORDER.get(v, 0), v)
        )
        if image_scores is not None:
            scores = load_image_scores(image_scores, info["image_ids"], names)
            out["image_AUC/source"] = f"image scores {image_scores}"
        else:
            scores = image_scores_from_detections(
                info["image_ids"], info["results"], info["categories"]
            )
            scores = {k: v for k, v in scores.items() if k in names}
            out["image_AUC/source"] = "detections (max score per class)"
        for k, v in image_auc(labels, scores).items():
            out[k.replace("AUC", "image_AUC", 1)] = v
    if compare_with is not None:
        other, _ = corloc_from_coco(gt, compare_with, class_aware=True, **kw)
        for k, v in paired_comparison(aware, other, **boot).items():
            if k not in ("n_boot", "seed", "confidence", "images"):
                out[f"vs_B/{k}"] = v
    return out


_LABEL_ORDER = {"normal": 0, "benign": 1, "malignant": 2}
