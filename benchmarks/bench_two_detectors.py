"""Training and inference speed of RetinaNet vs Faster R-CNN on the same backbone and data.

Both detectors are built by ``model.name`` from ``configs/synthetic_cpu.yaml`` (ResNet-18 width
0.25 GN, FPN 64 channels ``P3..P7``, anchors 8..128), Faster R-CNN with the box head width of
``configs/dsb2018_faster_rcnn_cpu.yaml`` (``representation_size`` 256) and with torchvision's
1024. Batches are real training batches of that config (the engine's data pipeline and
augmentation, synthetic nuclei at 256 px). A training iteration is the ``supervised`` method's
``training_step`` + ``backward`` + ``Adam.step``; inference is ``predict`` (forward +
post-processing) in ``eval()`` mode on the same batch. Detectors run interleaved, one step
each in turn, so they share the load of other jobs; medians after ``--warmup`` steps.

Run:  OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_two_detectors.py
      [--steps 10] [--warmup 2] [--threads 1] [--batch 4]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from typing import Any

import torch

from ssmd.config import load_config
from ssmd.engine.loader import BatchStream
from ssmd.methods import build_method
from ssmd.tasks.detection import augment_transform, build_data, build_model

DETECTORS: dict[str, list[str]] = {
    "RetinaNet": ["model.name=retinanet"],
    "Faster R-CNN (box head 256)": ["model.name=faster_rcnn", "model.representation_size=256"],
    "Faster R-CNN (box head 1024)": ["model.name=faster_rcnn", "model.representation_size=1024"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = tempfile.mkdtemp(prefix="ssmd_bench_")
    base = [f"data.cache_dir={cache}", f"train.batch_size={args.batch}"]
    config = load_config("configs/synthetic_cpu.yaml", base)
    data = build_data(config)
    stream = BatchStream(
        data.samples,
        data.indices("labeled"),
        args.batch,
        seed=0,
        augment=augment_transform(config),
        is_labeled=True,
    )
    batches = [next(stream) for _ in range(args.warmup + args.steps)]
    runs: dict[str, dict[str, Any]] = {}
    for name, overrides in DETECTORS.items():
        torch.manual_seed(0)
        cfg = load_config("configs/synthetic_cpu.yaml", base + overrides)
        model = build_model(cfg["model"], max(1, data.dataset.num_classes))
        method = build_method("supervised", model)
        opt = torch.optim.Adam(method.trainable_parameters(), lr=1e-3)
        runs[name] = {"method": method, "opt": opt, "train": [], "infer": []}
    for i, batch in enumerate(batches):
        for run in runs.values():
            method, opt = run["method"], run["opt"]
            method.train()
            t0 = time.perf_counter()
            losses = method.training_step(batch, None, i, 100)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            opt.step()
            t1 = time.perf_counter()
            method.model.eval()
            method.model.predict(batch.images, batch.image_sizes)
            t2 = time.perf_counter()
            if i >= args.warmup:
                run["train"].append(t1 - t0)
                run["infer"].append(t2 - t1)
    print(
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch} of "
        f"{tuple(batches[0].images.shape[-2:])} px, median of {args.steps} after {args.warmup} "
        f"warm-up, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| detector | parameters | train it/s | train img/s | inference img/s |\n"
        "|---|---:|---:|---:|---:|"
    )
    for name, run in runs.items():
        params = sum(p.numel() for p in run["method"].model.parameters())
        train = statistics.median(run["train"])
        infer = statistics.median(run["infer"])
        print(
            f"| {name} | {params / 1e6:.2f} M | {1 / train:.2f} | {args.batch / train:.1f} | "
            f"{args.batch / infer:.1f} |"
        )


if __name__ == "__main__":
    main()
