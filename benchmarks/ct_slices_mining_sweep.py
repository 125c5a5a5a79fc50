"""Precision / recall of Algorithm 2's mined boxes against the hidden truth, per alpha.

    python benchmarks/ct_slices_mining_sweep.py --config configs/ct_slices_synthetic_cpu.yaml \
        --checkpoint runs/ct_slices_synthetic_cpu/stage1/best.pt [--alphas 0.9 0.7 0.5 0.3]

Predicts every labeled key slice and its two neighbours once with the test-time ensemble of
the config (``method.tta_*``), then applies :func:`ssmd.methods.slice_labels.mine_missing`
at each ``alpha`` (``method.tau``) — no retraining: how many of the boxes missing on the
synthetic key slices a CPU-sized stage 1 would recover, and how many mined boxes are wrong.
"""

from __future__ import annotations

import argparse
import json

from ssmd.config import load_config
from ssmd.methods.slice_labels import mine_missing
from ssmd.tasks.ct_slices import _no_boxes, _tta, box_quality, ct_data, neighbour_of, recipe_params
from ssmd.tasks.detection import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.9, 0.7, 0.5, 0.3])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    p = recipe_params(config)
    model, _ = load_model(args.checkpoint)
    data = ct_data(config)
    ds = data.dataset
    cases = []
    for i in data.indices("labeled"):
        views = [i, neighbour_of(ds, i, 1), neighbour_of(ds, i, -1)]
        preds = [_tta(model, data.samples, j, config, p) if j is not None else None for j in views]
        hb, hid = ds.hidden_annotation(i)  # type: ignore[attr-defined]
        ann = set(ds.annotated_lesions(i))  # type: ignore[attr-defined]
        missing = hb[[m not in ann for m in hid.tolist()]].reshape(-1, 4)
        cases.append((ds.annotation(i)[0], preds, missing))
    rows = []
    for alpha in args.alphas:
        mined = []
        for gt, preds, _ in cases:
            k, u, lw = ((q["boxes"], q["scores"]) if q else _no_boxes() for q in preds)
            mined.append(mine_missing(gt, k, u, lw, alpha=alpha, tau=float(p["tau"])).boxes)
        rows.append({"alpha": alpha, **box_quality(mined, [c[2] for c in cases])})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
