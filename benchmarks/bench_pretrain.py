"""Time and memory of ``ssmd pretrain`` per 1,000 images: SimCLR and VICRegL at two view sizes.

Each setting is one ``ssmd pretrain`` process (so its peak RSS is its own) on the synthetic
nuclei set (``--images`` images of 256 px, the unlabeled part at 10% labels), with the CPU
detector's trunk (ResNet-18 x0.25, GroupNorm; the model section of configs/dsb2018_cpu.yaml)
and the microscopy preset. ``train_seconds`` covers the optimisation steps only (images are
read and cached before); seconds per 1,000 images = ``train_seconds / (steps * batch) * 1000``,
wall clock and process CPU time (on a shared machine the wall time also counts the waits for a
core; the CPU time does not).
The loss at the start and the end of the short run is printed as a sanity check, not a result.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pretrain.py [--steps 12] [--batch 16]
Prints a Markdown table and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path


def run(method: str, crop: int, args: argparse.Namespace, work: Path) -> dict[str, object]:
    out = work / f"{method}_{crop}"
    cmd = [
        sys.executable,
        "-m",
        "ssmd.cli.main",
        "pretrain",
        "--config",
        "configs/dsb2018_cpu.yaml",
        "data.format=synthetic",
        f"data.synthetic.n_images={args.images}",
        "data.synthetic.image_size=256",
        f"data.cache_dir={work / 'cache'}",
        "data.input_size=256",
        "split.labeled_ratio=0.1",
        f"pretrain.method.name={method}",
        f"pretrain.augment.crop_size={crop}",
        "pretrain.augment.scale=[0.2, 1.0]",
        f"pretrain.train.max_iters={args.steps}",
        f"pretrain.train.batch_size={args.batch}",
        "pretrain.train.warmup_iters=0",
        "pretrain.train.checkpoint_every=0",
        "pretrain.train.progress=false",
        f"pretrain.output_dir={out}",
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "pretrain_summary.json").read_text())
    summary["cache_megabytes_per_1000_images"] = (
        1000.0 * summary["cached_image_megabytes"] / summary["images"]
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--crops", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--methods", nargs="+", default=["simclr", "vicregl"])
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    rows = []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as tmp:
        for crop in args.crops:
            for method in args.methods:
                s = run(method, crop, args, Path(tmp))
                rows.append({**s, "method": method, "crop": crop})
                print(
                    f"{method} {crop} px: {s['seconds_per_1000_images']:.0f} s / 1,000 images, "
                    f"peak RSS {s['peak_rss_megabytes']:.0f} MB",
                    file=sys.stderr,
                )
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {stamp}, load average "
        f"{load[0]:.1f} before / {os.getloadavg()[0]:.1f} after; {args.steps} steps of "
        f"{args.batch} images x 2 views, {rows[0]['images']} images\n"
    )
    print(
        "| method | view px | wall s / 1,000 images | CPU-min / 1,000 images | peak RSS (MB) "
        "| image cache (MB / 1,000 images) | loss start -> end |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        per = float(r["seconds_per_1000_images"])  # type: ignore[arg-type]
        cpu = float(r["cpu_seconds_per_1000_images"])  # type: ignore[arg-type]
        print(
            f"| {r['method']} | {r['crop']} | {per:.0f} | {cpu / 60:.2f} "
            f"| {float(r['peak_rss_megabytes']):.0f} "  # type: ignore[arg-type]
            f"| {float(r['cache_megabytes_per_1000_images']):.0f} "  # type: ignore[arg-type]
            f"| {float(r['loss_start']):.3f} -> {float(r['loss_end']):.3f} |"  # type: ignore[arg-type]
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
