"""Training-step time of every Table-1 method on one detector and one batch shape.

The engine's default CPU detector (ResNet-18 width 0.25 GN, FPN 64, 2 GN head convs, anchors
8..128, softmax) with ``B`` labeled images of ``S x S`` px (30 random boxes each) and ``B``
unlabeled images; pseudo-labeling's unlabeled images carry 30 pseudo boxes. A step is
``training_step`` + ``backward`` + ``Adam.step`` (+ ``after_step``: SSMD's EMA update).
The methods run round-robin, one step each in turn, so they share the load of other jobs;
medians over ``--repeats`` steps after ``--warmup``.

Run:  OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_baseline_steps.py
      [--size 384] [--batch 4] [--repeats 5] [--warmup 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch

from ssmd.methods import build_method
from ssmd.methods.base import Method
from ssmd.models import build_retinanet
from ssmd.structures.sample import Batch, Sample, collate

METHODS = ("supervised", "pseudo_label", "csd", "focalmix", "ssmd")


def _batch(n: int, size: int, boxes_per_image: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        xy = torch.rand(boxes_per_image, 2, generator=g) * (size - 40)
        wh = 8 + torch.rand(boxes_per_image, 2, generator=g) * 30
        boxes = torch.cat([xy, xy + wh], dim=1)  # (N, 4) xyxy
        labels = torch.ones(boxes_per_image, dtype=torch.int64)
        samples.append(Sample(torch.randn(3, size, size, generator=g), boxes, labels, image_id=i))
    return collate(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lab = _batch(args.batch, args.size, 30, seed=1)
    unl_pseudo = _batch(args.batch, args.size, 30, seed=2)
    unl = _batch(args.batch, args.size, 0, seed=2)
    methods: dict[str, tuple[Method, torch.optim.Optimizer]] = {}
    for name in METHODS:
        model = build_retinanet(
            "resnet18",
            width_multiplier=0.25,
            fpn_channels=64,
            head_convs=2,
            head_norm="gn",
            backbone_norm="gn",
            anchor_sizes=(8, 16, 32, 64, 128),
        )
        params = {"tau": 0.0} if name == "ssmd" else {}  # IAP runs on every image (worst case)
        method = build_method(name, model, params)
        methods[name] = (method, torch.optim.Adam(method.trainable_parameters(), lr=1e-4))
    times: dict[str, list[float]] = {n: [] for n in METHODS}
    for i in range(args.warmup + args.repeats):
        for name, (method, opt) in methods.items():
            method.train()
            t0 = time.perf_counter()
            losses = method.training_step(
                lab, unl_pseudo if name == "pseudo_label" else unl, i, 100
            )
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            opt.step()
            method.after_step(i)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["supervised"])
    print(
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s), "
        f"batch {args.batch}+{args.batch} of {args.size} px, median of {args.repeats}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| method | seconds / step | ratio to supervised |\n|---|---:|---:|")
    for name in METHODS:
        t = statistics.median(times[name])
        print(f"| {name} | {t:.2f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
