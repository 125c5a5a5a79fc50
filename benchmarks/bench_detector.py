"""Training and inference speed of ssmd's RetinaNet vs torchvision's stock RetinaNet.

Both detectors get the *same* ResNet trunk (``ssmd.models.backbones.resnet``, same width),
an FPN ``P3..P7`` with ``P6`` from ``C5`` (ours: :class:`ssmd.models.necks.fpn.FPN`; theirs:
``torchvision.ops.FeaturePyramidNetwork`` + ``LastLevelP6P7``, i.e. ``BackboneWithFPN``), the
same 9 anchors per location and sizes, a 4-conv head per subnet, one foreground class with
sigmoid focal loss (ours also as softmax over K+1), score threshold 0.05, top-1000 per level,
NMS 0.5 and 300 detections. torchvision's ``GeneralizedRCNNTransform`` is set to a fixed size
equal to the input (``min_size = max_size = S``), mean 0 / std 1, and ``_skip_resize=True`` in
training; at inference it still runs its (identity-scale) resize, as the stock model does.

Training step = forward + loss + backward + SGD step on a batch of ``B`` images with 20
random GT boxes each (8-64 px). Inference = eval-mode forward + post-processing under
``torch.no_grad()``.

Timing: for each (config, size, mode) the three detectors are built in this process and their
steps are *interleaved* (A, B, C, C, B, A, ...), ``--steps`` timed steps each after
``--warmup``; we report batch / median step time (and batch / fastest step). Interleaving step by
step keeps a slow phase of other jobs on the machine from landing on one detector only.
Memory: each (config, size, detector, mode) is rerun in a fresh child process whose peak
resident set size (``VmHWM`` of ``/proc/self/status``; ``ru_maxrss`` elsewhere — on Linux
``ru_maxrss`` survives ``execve`` and would report the parent's peak) is reported, so the
numbers are each detector's own; they include the Python + torch import.

Run:  .venv/bin/python benchmarks/bench_detector.py [--sizes 256 448] [--batch 4]
      [--configs cpu full] [--steps 10] [--out docs/benchmarks_detector.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

CONFIGS: dict[str, dict[str, Any]] = {
    # CPU-sized: what the nuclei experiments train on a laptop.
    "cpu": {"width": 0.25, "fpn": 64, "anchor_sizes": (8, 16, 32, 64, 128)},
    # The standard RetinaNet widths (ResNet-18 trunk to stay within CPU minutes).
    "full": {"width": 1.0, "fpn": 256, "anchor_sizes": (32, 64, 128, 256, 512)},
}
IMPLS = ("ours-sigmoid", "torchvision", "ours-softmax")


class _TVBackbone(nn.Module):
    """Our ResNet trunk + torchvision's FPN/LastLevelP6P7, shaped like ``BackboneWithFPN``."""

    def __init__(self, body: nn.Module, in_channels: list[int], fpn_channels: int) -> None:
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

        self.body = body
        self.fpn = FeaturePyramidNetwork(
            in_channels, fpn_channels, extra_blocks=LastLevelP6P7(in_channels[-1], fpn_channels)
        )
        self.out_channels = fpn_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def _build(impl: str, cfg: dict[str, Any], size: int) -> nn.Module:
    from ssmd.models import build_resnet, build_retinanet

    if impl.startswith("ours"):
        return build_retinanet(
            "resnet18",
            width_multiplier=cfg["width"],
            fpn_channels=cfg["fpn"],
            head_convs=4,
            num_classes=1,
            anchor_sizes=cfg["anchor_sizes"],
            activation="sigmoid" if impl == "ours-sigmoid" else "softmax",
        )
    from torchvision.models.detection import RetinaNet as TVRetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator

    body = build_resnet("resnet18", width_multiplier=cfg["width"])
    backbone = _TVBackbone(body, list(body.out_channels), cfg["fpn"])
    sizes = tuple((s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)) for s in cfg["anchor_sizes"])
    anchors = TVAnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return TVRetinaNet(
        backbone,
        num_classes=1,
        min_size=size,
        max_size=size,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        anchor_generator=anchors,
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_img=300,
        topk_candidates=1000,
        _skip_resize=True,
    )


def _targets(batch: int, size: int, seed: int = 0) -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        wh = torch.rand(20, 2, generator=g) * 56 + 8
        xy = torch.rand(20, 2, generator=g) * (size - wh)
        out.append(
            {"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.ones(20, dtype=torch.int64)}
        )
    return out


def _make_step(
    impl: str, mode: str, cfg: dict[str, Any], size: int, batch: int
) -> Callable[[], None]:
    """Build one detector and return a closure running one training or inference step."""
    torch.manual_seed(0)
    model = _build(impl, cfg, size)
    images = torch.randn(batch, 3, size, size)
    targets = _targets(batch, size)
    ours = impl.startswith("ours")
    if not ours:  # torchvision's sigmoid head indexes classes from 0: our label 1 is its class 0
        targets = [{"boxes": t["boxes"], "labels": t["labels"] - 1} for t in targets]
    image_list = list(images)

    if mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def train_step() -> None:
            if ours:
                losses: dict[str, Tensor] = model.loss(model(images), targets)  # type: ignore[operator]
            else:
                losses = model(image_list, targets)
            loss = torch.stack(list(losses.values())).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return train_step

    model.eval()

    @torch.no_grad()
    def infer_step() -> None:
        if ours:
            model.postprocess(model(images))  # type: ignore[operator]
        else:
            model(image_list)

    return infer_step


def _peak_rss_mib() -> float:
    """This process's peak resident set size in MiB.

    ``VmHWM`` of ``/proc/self/status`` where available: Linux carries ``ru_maxrss`` across
    ``execve``, so a child's ``getrusage`` would report its parent's peak if that was larger.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(args: argparse.Namespace) -> None:
    """Peak memory of one (config, size, detector, mode): build, warm up, run a few steps."""
    torch.set_num_threads(args.threads)
    base = _peak_rss_mib()
    step = _make_step(args.impl, args.mode, CONFIGS[args.config], args.size, args.batch)
    for _ in range(args.warmup + 2):
        step()
    print(json.dumps({"peak_rss_mib": _peak_rss_mib(), "after_import_mib": base}))


def _time_interleaved(
    config: str, size: int, mode: str, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Step times of every detector, alternating detectors step by step (one process)."""
    steps = {impl: _make_step(impl, mode, CONFIGS[config], size, args.batch) for impl in IMPLS}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for rnd in range(args.steps):
        order = IMPLS if rnd % 2 == 0 else tuple(reversed(IMPLS))
        for impl in order:
            t0 = time.perf_counter()
            steps[impl]()
            times[impl].append(time.perf_counter() - t0)
    return times


def _run_child(
    config: str, size: int, impl: str, mode: str, args: argparse.Namespace
) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        f"--config={config}",
        f"--size={size}",
        f"--impl={impl}",
        f"--mode={mode}",
        f"--batch={args.batch}",
        f"--threads={args.threads}",
        f"--warmup={args.warmup}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {' '.join(cmd[2:])} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in lscpu.splitlines()
                if ln.startswith("Model name")
            ),
            "?",
        )
    except OSError:
        model = platform.processor() or "?"
    import torchvision

    return (
        f"{model}, {os.cpu_count()} logical CPUs; "
        f"Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 448])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per detector")
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    parser.add_argument("--note", default="", help="conditions of the run, added to the report")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="cpu", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="ours-sigmoid", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--mode", default="train", choices=("train", "infer"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    started = datetime.datetime.now().astimezone()
    torch.set_num_threads(args.threads)
    keys = [(c, z, m) for c in args.configs for z in args.sizes for m in ("train", "infer")]
    times: dict[tuple[str, int, str], dict[str, list[float]]] = {}
    peak: dict[tuple[str, int, str], dict[str, float]] = {}
    import_mib = 0.0
    for key in keys:
        times[key] = _time_interleaved(*key, args)
        if args.memory:
            for impl in IMPLS:
                r = _run_child(config=key[0], size=key[1], impl=impl, mode=key[2], args=args)
                peak.setdefault(key, {})[impl] = r["peak_rss_mib"]
                import_mib = max(import_mib, r["after_import_mib"])
        else:
            peak[key] = {}
        summary = ", ".join(
            f"{impl} {args.batch / statistics.median(t):.2f} img/s"
            for impl, t in times[key].items()
        )
        print(f"{key}: {summary}; peak RSS {peak[key]}", file=sys.stderr, flush=True)

    def rate(key: tuple[str, int, str], impl: str, how: str = "median") -> float:
        t = times[key][impl]
        return args.batch / (statistics.median(t) if how == "median" else min(t))

    def mem(key: tuple[str, int, str], impl: str) -> str:
        return f"{peak[key][impl]:.0f}" if peak[key] else "-"

    lines = [
        "| config | size | mode | ours (sigmoid) img/s | torchvision img/s | ratio ours/tv "
        "| ours (softmax) img/s | peak RSS MiB ours / tv / ours-softmax |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        o, t, s = IMPLS
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} "
            f"| {rate(key, o):.2f} (best {rate(key, o, 'best'):.2f}) "
            f"| {rate(key, t):.2f} (best {rate(key, t, 'best'):.2f}) "
            f"| **{rate(key, o) / rate(key, t):.2f}** (best {rate(key, o, 'best') / rate(key, t, 'best'):.2f}) "
            f"| {rate(key, s):.2f} | {mem(key, o)} / {mem(key, t)} / {mem(key, s)} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        command = shlex.join([".venv/bin/python", "benchmarks/bench_detector.py", *sys.argv[1:]])
        configs = "; ".join(
            f"`{k}`: ResNet-18 width {v['width']}, FPN {v['fpn']} ch, anchors {v['anchor_sizes']}"
            for k, v in CONFIGS.items()
            if k in args.configs
        )
        doc = f"""# Detector speed: ssmd RetinaNet vs torchvision RetinaNet

Command: `{command}`
Date: {started:%Y-%m-%d %H:%M %Z}
Machine: {_machine()}; benchmark run with {args.threads} threads, batch {args.batch},
{args.steps} timed steps per detector after {args.warmup} warm-up steps, detectors interleaved
step by step.

Configs: {configs}; 4-conv heads, 9 anchors/location, 1 class, 20 GT boxes per image.
Throughput: batch / median step time ("best": batch / fastest step). Memory: peak resident
set size (`VmHWM` of `/proc/self/status`, MiB) of a fresh child process that builds one detector
and runs {args.warmup + 2} steps; it includes the Python + torch import (~{import_mib:.0f} MiB).

{table}

{args.note}

What is compared and how: see the docstring of `benchmarks/bench_detector.py`.
"""
        args.out.write_text(doc)


if __name__ == "__main__":
    main()
