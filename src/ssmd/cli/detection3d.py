"""``ssmd predict`` / ``ssmd evaluate`` for 3D detection (``task: detection3d``, issue 22).

* ``ssmd predict --checkpoint best.pt --format luna16 ROOT --out candidates.csv`` -- a LUNA16
  submission CSV (``seriesuid,coordX,coordY,coordZ,probability``, world mm) of every scan
  under ``ROOT`` (resampled and windowed as the run's config says).
* ``ssmd evaluate --checkpoint best.pt [--part test]`` -- LUNA16 FROC / CPM of the run's own
  held-out part; with ``--format luna16 ROOT --annotations annotations.csv`` of those scans.
* ``ssmd evaluate --gt annotations.csv --pred candidates.csv --froc`` -- LUNA16 FROC / CPM of a
  submission CSV against a LUNA16 annotations CSV, with bootstrap CIs (``--bootstrap``).
  Every scan named in either file is evaluated; scans with candidates but no annotation row
  count as scans without nodules (their candidates are FPs), and how many there are is printed.

The work is done by :mod:`ssmd.tasks.detection3d` and :mod:`ssmd.evaluation.luna16`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cmd_evaluate", "cmd_evaluate_csv", "cmd_predict"]


def _dataset(args: argparse.Namespace, config: dict[str, Any]) -> Any:
    from ssmd.tasks.detection3d import dataset_from_config

    if args.format != "luna16":
        raise SystemExit(f"--format {args.format}: a detection3d checkpoint reads luna16 volumes")
    data = {**config["data"], "format": "luna16", "root": args.src}
    data["annotations"] = getattr(args, "annotations", None)
    return dataset_from_config(data)


def _write(metrics: dict[str, float], out: str | None) -> None:
    from ssmd.evaluation import format_metrics_table

    print(format_metrics_table(metrics))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(metrics, indent=2))


def cmd_predict(args: argparse.Namespace) -> int:
    """Write the LUNA16 submission CSV of a 3D checkpoint's predictions on ``SRC``."""
    from ssmd.data.splits import Split
    from ssmd.engine.loader import PreparedSamples
    from ssmd.evaluation.luna16 import write_submission
    from ssmd.tasks.detection3d import VolumeData, load_model, normalizer, predict_candidates

    model, state = load_model(args.checkpoint, args.model)
    config = state["config"]
    dataset = _dataset(args, config)
    print(f"predicting {len(dataset)} volumes with {args.checkpoint}", file=sys.stderr)
    data = VolumeData(
        dataset, Split([], [], [], [], [], 0), PreparedSamples(dataset, normalizer(config), False)
    )
    candidates = predict_candidates(model, data, range(len(dataset)), config["eval"])
    n = write_submission(args.out, candidates)
    print(f"wrote {n} candidates of {len(candidates)} scans to {args.out} (LUNA16 CSV, world mm)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """LUNA16 FROC of a 3D checkpoint: its run's ``--part``, or the volumes of ``SRC``."""
    from ssmd.data.splits import Split
    from ssmd.engine.loader import PreparedSamples
    from ssmd.evaluation.luna16 import luna16_froc
    from ssmd.tasks import get_task
    from ssmd.tasks.detection3d import (
        VolumeData,
        load_model,
        nodule_rows,
        normalizer,
        predict_candidates,
        seriesuid_of,
    )

    if args.src is None:
        metrics = get_task("detection3d").evaluate_checkpoint(
            args.checkpoint, args.part, args.model
        )
        print(f"{args.checkpoint} ({args.model}) on its run's {args.part} part:")
        _write(metrics, args.out)
        return 0
    model, state = load_model(args.checkpoint, args.model)
    config = state["config"]
    dataset = _dataset(args, config)
    data = VolumeData(
        dataset, Split([], [], [], [], [], 0), PreparedSamples(dataset, normalizer(config), False)
    )
    idx = range(len(dataset))
    candidates = predict_candidates(model, data, idx, config["eval"])
    nodules = {seriesuid_of(dataset, i): nodule_rows(dataset, i) for i in idx}
    result = luna16_froc(nodules, candidates, n_boot=args.bootstrap, seed=args.bootstrap_seed)
    _write(result.to_dict(), args.out)
    return 0


def cmd_evaluate_csv(args: argparse.Namespace) -> int:
    """LUNA16 FROC of a submission CSV (``--pred``) against an annotations CSV (``--gt``)."""
    from ssmd.data.volumes.luna16 import read_luna16_annotations
    from ssmd.evaluation.luna16 import luna16_froc, read_submission

    if args.gt is None:
        raise SystemExit("ssmd evaluate --pred CANDIDATES.csv needs --gt annotations.csv (LUNA16)")
    candidates = read_submission(args.pred)
    rows: dict[str, list[list[float]]] = {}
    for n in read_luna16_annotations(args.gt):
        rows.setdefault(n.seriesuid, []).append([*n.center_world, n.diameter_mm])
    nodules: dict[str, Any] = {k: np.asarray(v) for k, v in rows.items()}
    extra = sorted(set(candidates) - set(nodules))
    for uid in extra:
        nodules[uid] = np.zeros((0, 4))
    print(
        f"{len(nodules)} scans ({len(extra)} with candidates but no annotated nodule), "
        f"{sum(len(v) for v in rows.values())} nodules, "
        f"{sum(len(v) for v in candidates.values())} candidates"
    )
    result = luna16_froc(nodules, candidates, n_boot=args.bootstrap, seed=args.bootstrap_seed)
    _write(result.to_dict(), args.out)
    return 0
