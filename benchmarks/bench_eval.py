"""Evaluation speed: ssmd's coco_ap vs a direct pycocotools run (and faster-coco-eval).

Synthetic, seeded data: 1,000 images, 5-50 GT boxes each (one category, 1% iscrowd),
100 predictions per image (jittered copies of the GT plus random boxes). Every engine
evaluates the same data at maxDets [1, 10, 1000] in one process; the numbers are
checked to agree before the table is printed.

Run:  .venv/bin/python benchmarks/bench_eval.py [--images 1000] [--preds 100]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ssmd.evaluation import STAT_KEYS, coco_ap, froc_from_coco


def make_data(n_images: int, preds_per_image: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images: list[dict] = []
    anns: list[dict] = []
    preds: list[dict] = []
    for i in range(n_images):
        images.append({"id": i + 1, "width": 1000, "height": 1000})
        n_gt = int(rng.integers(5, 51))
        xy = rng.uniform(0, 900, (n_gt, 2))
        wh = rng.uniform(4, 120, (n_gt, 2))
        for k in range(n_gt):
            w, h = wh[k]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": [float(xy[k, 0]), float(xy[k, 1]), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": int(rng.random() < 0.01),
                }
            )
        n_tp = min(n_gt, preds_per_image // 2)
        jitter = rng.normal(0, 0.05, (n_tp, 4)) * np.c_[wh[:n_tp], wh[:n_tp]]
        boxes = np.c_[xy[:n_tp], wh[:n_tp]] + jitter
        boxes[:, 2:] = np.maximum(boxes[:, 2:], 1.0)
        rand = np.c_[
            rng.uniform(0, 900, (preds_per_image - n_tp, 2)),
            rng.uniform(4, 120, (preds_per_image - n_tp, 2)),
        ]
        scores = rng.uniform(0, 1, preds_per_image)
        for box, score in zip(np.r_[boxes, rand], scores, strict=True):
            preds.append(
                {
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                }
            )
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "nucleus"}],
    }, preds


def direct_pycocotools(gt: dict, preds: list[dict], max_dets: int) -> np.ndarray:
    """The plain pycocotools pipeline: COCO, loadRes, COCOeval, evaluate, accumulate, summarize."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(preds), iouType="bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.params.maxDets = [1, 10, 100]  # summarize() looks up 100 for stats[0]; see coco_map.py
        ev.summarize()
    return np.asarray(ev.stats)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--preds", type=int, default=100)
    args = parser.parse_args()
    gt, preds = make_data(args.images, args.preds)
    md = 1000
    print(
        f"{args.images} images, {len(gt['annotations'])} GT boxes, {len(preds)} predictions; "
        f"maxDets [1, 10, {md}]; python {platform.python_version()}"
    )

    rows: list[tuple[str, float]] = []
    # Deep copies outside the timers: pycocotools writes into the dicts it is given.
    gt_copy, preds_copy = copy.deepcopy(gt), copy.deepcopy(preds)
    t_ref, ref = timed(lambda: direct_pycocotools(gt_copy, preds_copy, md))
    rows.append(("pycocotools COCOeval, direct", t_ref))
    t_ours, ours = timed(lambda: coco_ap(gt, preds, max_dets=md))
    rows.append(("ssmd `coco_ap` (backend='pycocotools')", t_ours))
    np.testing.assert_allclose([ours[k] for k in STAT_KEYS], ref, atol=1e-6)
    try:
        import faster_coco_eval  # noqa: F401

        t_fast, fast = timed(lambda: coco_ap(gt, preds, max_dets=md, backend="faster"))
        rows.append(("ssmd `coco_ap` (backend='faster', faster-coco-eval)", t_fast))
        np.testing.assert_allclose([fast[k] for k in STAT_KEYS], ref, atol=1e-6)
    except ImportError:
        print("faster-coco-eval not installed: skipping backend='faster'")
    t_froc, _ = timed(lambda: froc_from_coco(gt, preds))
    rows.append(("ssmd `froc_from_coco` (IoU rule), for scale", t_froc))

    print(f"\nAP = {ours['AP']:.4f}, AR = {ours['AR']:.4f} (all engines agree to 1e-6)\n")
    print("| engine | seconds | ratio to direct pycocotools |")
    print("|---|---:|---:|")
    for name, sec in rows:
        print(f"| {name} | {sec:.2f} | {sec / t_ref:.2f}x |")


if __name__ == "__main__":
    main()
