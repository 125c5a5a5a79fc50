"""How good are a stage-1 detector's pseudo labels at each score threshold?

Pseudo-labeling (STAC, the SSMD paper's baseline) keeps stage-1 detections with
``score >= threshold`` (0.9 in the paper) on the unlabeled images. On a benchmark whose
"unlabeled" images do have ground truth (DSB 2018, synthetic), this script predicts them with a
stage-1 checkpoint and reports, per threshold, how many boxes survive, their precision and the
recall of the hidden ground truth (a pseudo box is correct when its IoU with an unmatched
ground-truth box is >= ``--iou``, greedy by score, as COCO matching). It reads the run's own
config and split, so it evaluates exactly the images stage 2 trained on.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pseudo_label_quality.py \
        docs/results/table1_cpu/runs/pseudo-labeling__r0.1__s0/stage1 --part unlabeled
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml
from torchvision.ops import box_iou

from ssmd.data.splits import Split
from ssmd.models.predict import predict_samples
from ssmd.tasks.detection import build_data, load_model, normalize_transform


def match_counts(
    boxes: torch.Tensor, scores: torch.Tensor, gt: torch.Tensor, iou: float
) -> torch.Tensor:
    """Per detection (sorted by score, descending): 1 if it matches a still unmatched gt box."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    hits = torch.zeros(len(boxes))
    if len(gt) == 0 or len(boxes) == 0:
        return hits
    ious = box_iou(boxes, gt)  # (N, G)
    taken = torch.zeros(len(gt), dtype=torch.bool)
    for i in range(len(boxes)):
        row = ious[i].masked_fill(taken, -1.0)
        j = int(row.argmax())
        if row[j] >= iou:
            taken[j] = True
            hits[i] = 1.0
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run_dir", type=Path, help="a finished run (config.yaml, split.json, best.pt)"
    )
    parser.add_argument("--part", default="unlabeled", help="split part to predict")
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument(
        "--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    )
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = parser.parse_args()

    config = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    data = build_data(config, split=Split.from_json(args.run_dir / "split.json"))
    model, _ = load_model(args.run_dir / "best.pt")
    indices = data.indices(args.part)
    preds = predict_samples(
        model,
        data.samples,
        indices,
        batch_size=int(config["eval"]["batch_size"]),
        normalize=normalize_transform(config["data"]),
        progress=True,
    )
    n_gt = 0
    scores_all, hits_all = [], []
    for index, pred in zip(indices, preds, strict=True):
        gt_boxes = data.dataset.annotation(index)[0]
        n_gt += len(gt_boxes)
        order = pred["scores"].argsort(descending=True)
        scores_all.append(pred["scores"][order])
        hits_all.append(match_counts(pred["boxes"], pred["scores"], gt_boxes, args.iou))
    scores = torch.cat(scores_all)
    hits = torch.cat(hits_all)
    rows = []
    for t in args.thresholds:
        keep = scores >= t
        kept = int(keep.sum())
        tp = float(hits[keep].sum())
        rows.append(
            {
                "threshold": t,
                "boxes": kept,
                "boxes_per_image": kept / max(len(indices), 1),
                "precision": tp / kept if kept else float("nan"),
                "recall": tp / n_gt if n_gt else float("nan"),
            }
        )
    print(
        f"{args.run_dir} part={args.part}: {len(indices)} images, {n_gt} ground-truth boxes "
        f"({n_gt / max(len(indices), 1):.1f}/image), IoU >= {args.iou}"
    )
    print("| threshold | boxes/image | precision | recall |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['threshold']:.2f} | {r['boxes_per_image']:.1f} | {r['precision']:.3f} "
            f"| {r['recall']:.3f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"n_images": len(indices), "n_gt": n_gt, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
