"""Are a detector's scores on the scale SSMD's thresholds assume?

SSMD's instance-level adversarial perturbation fires where the student's summed foreground
probability ``1 - p[0]`` exceeds ``tau = 0.95`` (Eq. (9)); its adaptive weight
``W = ((1 - p_s[0])^2 + (1 - p_t[0])^2) / 2`` (Eq. (4)) is meant to be large on objects and
small on background; pseudo-labeling keeps detections scoring >= 0.9. All three read the
softmax probability as a calibrated confidence. This script predicts a part of a finished
run's own split with its ``best.pt`` and reports, on the dense maps and on the detections:

* ``fg_max``: each image's largest ``1 - p[0]`` over all anchors (quantiles) and the fraction
  of images above 0.5 / 0.8 / 0.9 / 0.95 — with ``tau_mode=absolute`` the last one is the
  fraction of images on which Eq. (9) would let the adversarial step act;
* ``W``: the Eq. (4) weight with student = teacher, ``(1 - p[0])^2``, averaged over the anchors
  the matcher makes foreground (IoU >= 0.5 with a ground-truth box), and the fraction of the
  total W mass on background anchors (IoU < 0.4);
* calibration of the detections (after NMS, score >= the model's ``score_thresh``): per score
  bin the fraction that match a ground-truth box at IoU >= 0.5 (greedy by score), and the
  expected calibration error ``sum_b n_b / n |precision_b - mean score_b|``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/score_calibration.py runs/focal --part val
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import yaml
from torchvision.ops import box_iou

from ssmd.data.splits import Split
from ssmd.structures.sample import collate
from ssmd.tasks.detection import build_data, load_model, normalize_transform

TAUS = (0.5, 0.8, 0.9, 0.95)
BINS = 10


def greedy_hits(boxes: torch.Tensor, scores: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """1.0 for each detection (in the given order) that matches a still unmatched gt box at IoU >= 0.5."""
    order = scores.argsort(descending=True)
    hits = torch.zeros(len(boxes))
    if len(gt) == 0 or len(boxes) == 0:
        return hits
    ious = box_iou(boxes[order], gt)  # (N, G)
    taken = torch.zeros(len(gt), dtype=torch.bool)
    for rank, i in enumerate(order.tolist()):
        row = ious[rank].masked_fill(taken, -1.0)
        j = int(row.argmax())
        if row[j] >= 0.5:
            taken[j] = True
            hits[i] = 1.0
    return hits


@torch.no_grad()
def calibration_report(run_dir: Path, part: str, batch_size: int = 4) -> dict[str, Any]:
    """The statistics of the module docstring for ``run_dir``'s ``best.pt`` on ``part``."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    data = build_data(config, split=Split.from_json(run_dir / "split.json"))
    model, _ = load_model(run_dir / "best.pt")
    normalize = normalize_transform(config["data"])
    indices = data.indices(part)
    fg_max: list[float] = []
    w_fg: list[torch.Tensor] = []
    w_bg_mass, w_mass = 0.0, 0.0
    scores_all: list[torch.Tensor] = []
    hits_all: list[torch.Tensor] = []
    for start in range(0, len(indices), batch_size):
        batch = collate([normalize(data.samples[i]) for i in indices[start : start + batch_size]])
        outputs = model(batch.images)
        p_bg = outputs.flat_cls_logits().softmax(-1)[..., 0]  # (B, N)
        fg_max += (1.0 - p_bg).max(dim=1).values.tolist()
        labels, _ = model.assign_targets(outputs, batch.targets())  # (B, N)
        w = (1.0 - p_bg) ** 2  # Eq. (4) with p_s = p_t, (B, N)
        w_fg.append(w[labels > 0])
        w_bg_mass += float(w[labels == 0].sum())
        w_mass += float(w.sum())
        dets = model.postprocess(outputs, image_sizes=batch.image_sizes)
        for det, gt in zip(dets, batch.boxes, strict=True):
            scores_all.append(det["scores"])
            hits_all.append(greedy_hits(det["boxes"], det["scores"], gt))
    fg = torch.tensor(fg_max)
    scores = torch.cat(scores_all)
    hits = torch.cat(hits_all)
    bins = []
    ece = 0.0
    for b in range(BINS):
        lo, hi = b / BINS, (b + 1) / BINS
        sel = (scores >= lo) & ((scores < hi) if b < BINS - 1 else (scores <= hi))
        n = int(sel.sum())
        if n == 0:
            continue
        mean_score, precision = float(scores[sel].mean()), float(hits[sel].mean())
        ece += n / len(scores) * abs(precision - mean_score)
        bins.append(
            {"bin": f"[{lo:.1f}, {hi:.1f})", "n": n, "score": mean_score, "precision": precision}
        )
    matched_w = torch.cat(w_fg)
    metrics_path = run_dir / "test_metrics.json"
    test = json.loads(metrics_path.read_text()).get("test", {}) if metrics_path.exists() else {}
    return {
        "run": str(run_dir),
        "cls_loss": config["model"]["cls_loss"],
        "part": part,
        "images": len(fg_max),
        "test_AP": test.get("AP"),
        "test_AP50": test.get("AP50"),
        "fg_max_quantiles": {
            q: float(fg.quantile(float(q))) for q in ("0.0", "0.25", "0.5", "0.75", "1.0")
        },
        "images_above": {str(t): float((fg > t).float().mean()) for t in TAUS},
        "W_mean_on_matched_anchors": float(matched_w.mean()) if matched_w.numel() else None,
        "W_mass_on_background_anchors": w_bg_mass / w_mass if w_mass > 0 else None,
        "detections": len(scores),
        "detections_above": {str(t): int((scores >= t).sum()) for t in TAUS},
        "ece": ece,
        "bins": bins,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", help="finished runs (best.pt)")
    parser.add_argument("--part", default="val", help="split part to predict")
    parser.add_argument("--json", type=Path, help="also write the reports here")
    args = parser.parse_args()
    reports = [calibration_report(d, args.part) for d in args.run_dirs]
    for r in reports:
        q = r["fg_max_quantiles"]
        print(
            f"{r['run']} ({r['cls_loss']}): test AP {r['test_AP']}, AP50 {r['test_AP50']}; "
            f"fg_max min/median/max {q['0.0']:.3f}/{q['0.5']:.3f}/{q['1.0']:.3f}; images above "
            + ", ".join(f"{t}: {v:.2f}" for t, v in r["images_above"].items())
            + f"; W on matched anchors {r['W_mean_on_matched_anchors']:.3f}, W mass on"
            f" background {r['W_mass_on_background_anchors']:.2f}; ECE {r['ece']:.3f} over"
            f" {r['detections']} detections"
        )
        for b in r["bins"]:
            print(
                f"    {b['bin']}: n={b['n']}, score {b['score']:.3f}, precision {b['precision']:.3f}"
            )
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
