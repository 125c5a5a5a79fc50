"""Inference speed of the exported ONNX RetinaNet (onnxruntime) against PyTorch (issue 23).

The engine's default CPU detector (ResNet-18 width 0.25 GN, FPN 64, 2 GN head convs, anchors
8..128, softmax; random weights — speed does not depend on them) on ``B`` random images of
``S x S`` px. Both backends time the same work: the network with decode (PyTorch:
``model(x)`` + ``model.postprocess``; ONNX: the session + :func:`select_detections`, the NMS
post-step), and the network alone (PyTorch ``RetinaNetExport(model)(x)`` vs the session). The
backends alternate, one call each in turn, so they share the load of other jobs; medians over
``--repeats`` calls after ``--warmup``. Also checks the largest output difference.

Run:  OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_onnx.py
      [--size 256] [--batch 1] [--repeats 20] [--warmup 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ssmd.models import build_retinanet
from ssmd.models.export import OnnxDetector, RetinaNetExport, export_detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_retinanet(
        width_multiplier=0.25,
        fpn_channels=64,
        head_convs=2,
        head_norm="gn",
        backbone_norm="gn",
        anchor_sizes=(8, 16, 32, 64, 128),
    ).eval()
    dense = RetinaNetExport(model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_detector(model, Path(tmp) / "m.onnx", {"model": {}}, (args.size, args.size))
        onnx_model = OnnxDetector(path, threads=args.threads)
        x = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
        sizes = [(args.size, args.size)] * args.batch

        def torch_full() -> None:
            with torch.no_grad():
                model.postprocess(model(x), sizes)

        def onnx_full() -> None:
            onnx_model.postprocess(onnx_model(x), sizes)

        def torch_net() -> None:
            with torch.no_grad():
                dense(x)

        def onnx_net() -> None:
            onnx_model.session.run(None, {"images": x.numpy()})

        with torch.no_grad():
            ref = dense(x)
        got = onnx_model.session.run(None, {"images": x.numpy()})
        diff = max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref, strict=True))
        cases: dict[str, Callable[[], None]] = {
            "pytorch net+decode+nms": torch_full,
            "onnxruntime net+decode, nms post-step": onnx_full,
            "pytorch net+decode": torch_net,
            "onnxruntime net+decode": onnx_net,
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(args.warmup + args.repeats):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                if r >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
    print(
        f"# bench_onnx {datetime.date.today()} {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, threads {args.threads}, batch {args.batch}, "
        f"{args.size}x{args.size}, {args.repeats} repeats; max |onnx - torch| {diff:.2e}"
    )
    print("| backend | median ms / batch | images / s |")
    print("|---|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1000:.1f} | {args.batch / med:.1f} |")


if __name__ == "__main__":
    main()
