"""Methods x seeds on one dataset and labeled ratio: mean +- std and a paired p-value.

Kept for the results already produced with it (docs/results/synthetic_10pct). For new
comparisons use ``ssmd experiment --config EXP.yaml`` (:mod:`ssmd.experiments`):
several labeled ratios, method variants with parameters, Table-1-style tables with the best
marked and p-values, and workers sharing the output folder.

Each (method, seed) cell is one ``ssmd train`` run (``run_training``) on the same split
(``split.seed`` fixed; ``seed`` varies the initialisation, batch order and augmentation).
Finished cells are skipped (their ``test_metrics.json`` is read back), so an interrupted
comparison resumes. Writes ``results.csv`` and ``summary.json`` to ``--out``.

Example (the synthetic comparison of docs/benchmarks.md):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/compare_methods.py \\
        --config configs/synthetic_cpu.yaml --methods supervised ssmd --seeds 0 1 2 \\
        --out docs/results/synthetic_10pct split.labeled_ratio=0.1
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

from ssmd.config import load_config
from ssmd.evaluation.statistics import compare, mean_std
from ssmd.tasks.detection import run_training

METRICS = ("AP", "AP50", "AP75", "sensitivity@4", "CPM")


def run_cell(
    config_path: str, overrides: list[str], method: str, seed: int, runs: Path
) -> dict[str, Any]:
    """One training run, or its saved result if it already finished."""
    out = runs / f"{method}-seed{seed}"
    done = out / "test_metrics.json"
    if done.is_file():
        return dict(json.loads(done.read_text()))
    config = load_config(
        config_path, [*overrides, f"method.name={method}", f"seed={seed}", f"output_dir={out}"]
    )
    return run_training(config)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", required=True, help="folder for results.csv and summary.json")
    parser.add_argument(
        "--runs", default=None, help="folder of the runs (default OUT/runs; not meant for git)"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()
    out = Path(args.out)
    runs = Path(args.runs) if args.runs else out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    start = time.time()
    for seed in args.seeds:  # seed-major, so a partial run already has paired cells
        for method in args.methods:
            summary = run_cell(args.config, args.overrides, method, seed, runs)
            row = {
                "method": method,
                "seed": seed,
                "train_seconds": round(summary["train_seconds"], 1),
            }
            row.update({m: summary["test"].get(m, float("nan")) for m in METRICS})
            rows.append(row)
            print(json.dumps(row), flush=True)
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table: dict[str, Any] = {
        "config": args.config,
        "overrides": args.overrides,
        "seeds": args.seeds,
        "methods": {},
    }
    for method in args.methods:
        vals = {m: [r[m] for r in rows if r["method"] == method] for m in METRICS}
        table["methods"][method] = {
            m: dict(zip(("mean", "std"), mean_std(v), strict=True)) for m, v in vals.items()
        }
    if len(args.methods) >= 2 and len(args.seeds) >= 2:
        a, b = args.methods[-1], args.methods[0]
        table["comparison"] = {
            m: compare(
                [r[m] for r in rows if r["method"] == a],
                [r[m] for r in rows if r["method"] == b],
                test="paired_t",
            )
            for m in METRICS
        }
        table["comparison"]["pair"] = f"{a} vs {b}"
    table["wall_seconds"] = round(time.time() - start, 1)
    (out / "summary.json").write_text(json.dumps(table, indent=2))
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
