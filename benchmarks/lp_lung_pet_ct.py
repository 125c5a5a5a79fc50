"""Label propagation on real CT: lung_pet_ct_dx, one boxed slice -> its neighbours (issue 21).

    python benchmarks/lp_lung_pet_ct.py [--root ../shared/data/lung_pet_ct_dx/deeplesion_format]
        [--key 18] [--iters 150] [--out lp_lung.json]

The series (5 mm slices) has one tumour boxed by a radiologist on 11 consecutive slices. An
FPN-3DCE detector (``faster_rcnn_3dce``, 9 channels = 3 groups of 3, slices interpolated to
2 mm as the LP paper, window -1024..3071 HU, 256 px) is trained on the key slice alone (its
one box, random horizontal flips); it then predicts the slices ``key +- d`` and Algorithm 1
(:func:`ssmd.methods.slice_labels.propagate_labels`, tau 0.5) keeps the predictions that
overlap the key slice's box. Printed per offset: the propagated box (the best-scoring one),
its IoU with the box really drawn on that slice, and, as the trivial reference, the IoU of
the key slice's box copied unchanged onto that slice.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ssmd.data.datasets.deeplesion import DeepLesionDataset
from ssmd.data.transforms import Compose, Normalize, RandomHFlip, Resize
from ssmd.engine.loader import PreparedSamples
from ssmd.methods.slice_labels import propagate_labels
from ssmd.models.factory import model_from_config
from ssmd.models.predict import predict_samples
from ssmd.structures.boxes import box_iou
from ssmd.structures.sample import collate

MODEL = {
    "name": "faster_rcnn_3dce",
    "slice_groups": 3,
    "backbone_norm": "gn",
    "width_multiplier": 0.25,
    "fpn_channels": 32,
    "anchor_sizes": [8, 16, 32, 64, 128],
    "representation_size": 128,
    "rpn_post_nms_top_n_train": 200,
    "rpn_post_nms_top_n_test": 100,
    "box_batch_size_per_image": 64,
    "score_thresh": 0.01,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data/lung_pet_ct_dx/deeplesion_format")
    parser.add_argument("--key", type=int, default=18, help="the boxed slice trained on")
    parser.add_argument("--iters", type=int, default=150)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    ds = DeepLesionDataset(args.root, num_neighbors=4, z_spacing=2.0, slices="all", window="lp")
    index = {k.slice_index: i for i, k in enumerate(ds.keys)}
    key = index[args.key]
    drawn = {k.slice_index: ds.annotation(i)[0] for i, k in enumerate(ds.keys) if k.rows}
    mean, std = ds.mean_std([key])
    norm = Normalize([mean] * 9, [std] * 9)
    samples = PreparedSamples(ds, Resize(args.size, pad_to=128))
    train_tf = Compose([RandomHFlip(0.5), norm])
    model = model_from_config(MODEL, num_classes=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    for step in range(args.iters):
        batch = collate([train_tf(samples[key]), train_tf(samples[key])])
        losses = model.loss(model(batch.images), batch.targets())  # type: ignore[operator]
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()  # type: ignore[union-attr]
        opt.step()
        if step % 50 == 0 or step == args.iters - 1:
            print(f"step {step}: loss {float(total):.3f}", flush=True)
    offsets = [d for d in range(-5, 6) if args.key + d in drawn]
    targets = [index[args.key + d] for d in offsets]
    preds = predict_samples(model, samples, targets, batch_size=1, normalize=norm)
    gt_key = drawn[args.key]
    rows = []
    for d, pred in zip(offsets, preds, strict=True):
        truth = drawn[args.key + d]
        keep, _ = propagate_labels(gt_key, pred["boxes"], args.tau)
        best_any = float(box_iou(pred["boxes"], truth).max()) if len(pred["boxes"]) else 0.0
        row = {
            "offset": d,
            "slice": args.key + d,
            "detections": len(pred["boxes"]),
            "propagated": len(keep),
            "iou_propagated_vs_drawn": (
                round(float(box_iou(pred["boxes"][keep[:1]], truth)[0, 0]), 3)
                if len(keep)
                else None
            ),
            "propagated_score": round(float(pred["scores"][keep[0]]), 3) if len(keep) else None,
            "iou_best_detection_vs_drawn": round(best_any, 3),
            "iou_key_box_copied_vs_drawn": round(float(box_iou(gt_key, truth)[0, 0]), 3),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "key_slice": args.key,
        "iters": args.iters,
        "tau": args.tau,
        "seed": args.seed,
        "rows": rows,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))


if __name__ == "__main__":
    main()
