"""Paired CorLoc comparison of two finished runs on the same test images (BUSI, issue 20).

The slides' Tables II, IV and V give CorLoc with a bootstrap CI and a p-value between
methods on the same test set. A seed's cells of ``configs/experiments/busi_mil_cpu.yaml`` share
their split (``split.seed`` is fixed), so two runs of one seed can be compared image by image:
this rebuilds the test part's ground truth from run A's ``config.yaml`` and ``split.json``,
reads both runs' ``test_predictions.json`` and prints :func:`ssmd.evaluation.corloc.corloc_report`
with ``compare_with`` (CorLoc, CI, the difference with its CI, the percentile-bootstrap and the
paired t-test p-values over test images).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/busi_paired_corloc.py \\
        docs/results/busi_mil_cpu/runs/joint-proposed__r0.15__s0 \\
        docs/results/busi_mil_cpu/runs/strong-only__r0.15__s0 --json out.json

Run dirs hold ``test_predictions.json`` only while the run's folder is complete (the
experiment's committed ``runs/<cell>/`` keep ``result.json``, ``config.yaml``, ``split.json``
and ``metrics.jsonl``; keep the worker's folder to compare).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from ssmd.data.splits import Split
from ssmd.evaluation.corloc import corloc_report
from ssmd.tasks.detection import build_data, dataset_from_config


def test_gt(run: Path) -> dict[str, Any]:
    """The COCO ground truth of ``run``'s test part (its own config and split)."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    split = Split.from_json(run / "split.json", dataset_from_config(config["data"]))
    return build_data(config, split=split).gt("test")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run_a", type=Path, help="method A's run folder")
    ap.add_argument("run_b", type=Path, help="method B's run folder (same split)")
    ap.add_argument("--n-boot", type=int, default=10000)
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args()
    split_a = json.loads((args.run_a / "split.json").read_text())
    split_b = json.loads((args.run_b / "split.json").read_text())
    if split_a.get("test") != split_b.get("test"):
        raise SystemExit(f"{args.run_a} and {args.run_b} have different test parts: not paired")
    gt = test_gt(args.run_a)
    report = corloc_report(
        gt,
        json.loads((args.run_a / "test_predictions.json").read_text()),
        compare_with=json.loads((args.run_b / "test_predictions.json").read_text()),
        n_boot=args.n_boot,
    )
    for key, value in report.items():
        print(f"{key:32s} {value:.4f}" if isinstance(value, float) else f"{key:32s} {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
