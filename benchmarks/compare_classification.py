"""Classification methods x labeled ratios x seeds: mean +- std and paired p-values.

Each (ratio, seed, method) cell is one ``run_classification_training`` run. ``seed`` sets both
the training seed and ``split.seed`` (which images are labeled; for sets without an official
split also train/val/test), so the methods of one seed share their split and are compared
with a paired t-test over seeds (``ssmd.evaluation.statistics.compare``). Finished cells are
read back from their ``test_metrics.json`` and an interrupted cell continues from its
``last.pt``, so an interrupted grid resumes.

Writes to ``--out``: ``results.csv`` (one row per run), ``summary.json`` (mean, std and
p-values) and ``table.md``.

Example (docs/results/classification/README.md has the exact commands used):

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 python benchmarks/compare_classification.py \\
        --config configs/classification/pneumoniamnist_cpu.yaml --ratios 0.05 0.1 0.2 \\
        --seeds 0 1 2 --out docs/results/classification/pneumoniamnist --runs runs/cls_pneu
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
from ssmd.tasks.classification import run_classification_training

METRICS = ("AUC", "accuracy", "accuracy_ovr", "sensitivity", "specificity", "F1")
METHODS = ("supervised", "mean_teacher", "srcmt", "stsc")
PAIRS = (
    ("mean_teacher", "supervised"),
    ("srcmt", "supervised"),
    ("stsc", "supervised"),
    ("srcmt", "mean_teacher"),
    ("stsc", "mean_teacher"),
    ("stsc", "srcmt"),
)


def run_cell(
    config_path: str, overrides: list[str], method: str, ratio: float, seed: int, runs: Path
) -> dict[str, Any]:
    """One run, or its saved result."""
    out = runs / f"r{ratio:g}" / f"{method}-seed{seed}"
    done, summ = out / "test_metrics.json", out / "summary.json"
    if done.is_file() and summ.is_file():
        return {"test": json.loads(done.read_text()), **json.loads(summ.read_text())}
    config = load_config(
        config_path,
        [
            *overrides,
            f"method.name={method}",
            f"seed={seed}",
            f"split.seed={seed}",
            f"split.labeled_ratio={ratio}",
            f"output_dir={out}",
            "train.progress=false",
        ],
    )
    return run_classification_training(config, resume=True)  # continues an interrupted cell


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--ratios", nargs="+", type=float, required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--out", required=True, help="folder for results.csv, summary.json, table.md"
    )
    parser.add_argument("--runs", default=None, help="folder of the runs (default OUT/runs)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()
    out = Path(args.out)
    runs = Path(args.runs) if args.runs else out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for ratio in args.ratios:
        for seed in args.seeds:
            for method in args.methods:
                start = time.perf_counter()
                res = run_cell(args.config, args.overrides, method, ratio, seed, runs)
                row = {"ratio": ratio, "method": method, "seed": seed}
                row.update({m: res["test"].get(m, float("nan")) for m in METRICS})
                row["train_seconds"] = res.get("train_seconds", float("nan"))
                row["best_step"] = res.get("best_step", -1)
                rows.append(row)
                print(
                    f"ratio {ratio:g} seed {seed} {method:12s} AUC {row['AUC']:.4f} "
                    f"acc {row['accuracy']:.4f} ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
                write_outputs(out, rows, args)


def write_outputs(out: Path, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """``results.csv``, ``summary.json`` and ``table.md`` of the rows so far."""
    with (out / "results.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary: dict[str, Any] = {
        "config": args.config,
        "overrides": args.overrides,
        "seeds": args.seeds,
        "ratios": {},
    }
    lines = [
        "| labeled | method | " + " | ".join(METRICS) + " | train s |",
        "|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    for ratio in args.ratios:
        by_method: dict[str, dict[str, list[float]]] = {}
        for r in rows:
            if r["ratio"] == ratio:
                d = by_method.setdefault(r["method"], {m: [] for m in (*METRICS, "train_seconds")})
                for m in (*METRICS, "train_seconds"):
                    d[m].append(float(r[m]))
        entry: dict[str, Any] = {"methods": {}, "p_values": {}}
        for method, vals in by_method.items():
            stats = {
                m: dict(zip(("mean", "std"), mean_std(v), strict=True)) for m, v in vals.items()
            }
            stats["n"] = {"mean": float(len(vals["AUC"])), "std": 0.0}
            entry["methods"][method] = stats
            cells = [f"{100 * stats[m]['mean']:.2f} ± {100 * stats[m]['std']:.2f}" for m in METRICS]
            lines.append(
                f"| {ratio:.0%} | {method} | "
                + " | ".join(cells)
                + f" | {stats['train_seconds']['mean']:.0f} |"
            )
        for a, b in PAIRS:
            if (
                a in by_method
                and b in by_method
                and len(by_method[a]["AUC"]) == len(by_method[b]["AUC"]) >= 2
            ):
                entry["p_values"][f"{a} vs {b}"] = {
                    m: compare(by_method[a][m], by_method[b][m], test="paired_t") for m in METRICS
                }
        summary["ratios"][f"{ratio:g}"] = entry
    lines.append("")
    lines.append("Paired t-test p-values over seeds (AUC / accuracy / F1):")
    lines.append("")
    lines.append("| labeled | comparison | ΔAUC | p AUC | p acc | p F1 |")
    lines.append("|---|---|---|---|---|---|")
    for ratio_key, entry in summary["ratios"].items():
        for pair, res in entry["p_values"].items():
            lines.append(
                f"| {float(ratio_key):.0%} | {pair} | {100 * res['AUC']['diff']:+.2f} | "
                f"{res['AUC']['p_value']:.3f} | {res['accuracy']['p_value']:.3f} | "
                f"{res['F1']['p_value']:.3f} |"
            )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
