"""Training-step speed under the CPU thread settings of the ``ssmd`` command, idle and shared.

Each setting runs in a fresh process (OpenMP reads its environment when it loads):
``OMP_NUM_THREADS`` 1 or 2 x ``OMP_WAIT_POLICY`` ACTIVE (OpenMP's default: idle threads
spin) or PASSIVE (what ``ssmd`` sets), each alone and beside one busy single-threaded process
(a matrix-multiply loop, standing for another user's job). A step is the supervised RetinaNet
step of the CPU configs (ResNet-18 x0.25 GN, 256 px, batch 4, 30 boxes per image).

Run:  .venv/bin/python benchmarks/bench_cpu_threads.py [--steps 12] [--size 256]
The machine should be otherwise idle; the script prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

WORKER = r"""
import sys, time, torch
from ssmd.methods import build_method
from ssmd.models import build_retinanet
from ssmd.structures.sample import Sample, collate
steps, size = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
g = torch.Generator().manual_seed(0)
samples = []
for i in range(4):
    xy = torch.rand(30, 2, generator=g) * (size - 40)
    wh = 8 + torch.rand(30, 2, generator=g) * 30
    samples.append(Sample(torch.rand(3, size, size, generator=g), torch.cat([xy, xy + wh], 1),
                          torch.ones(30, dtype=torch.int64), image_id=i + 1))
batch = collate(samples)
model = build_retinanet(backbone="resnet18", backbone_norm="gn", width_multiplier=0.25,
                        fpn_channels=64, head_convs=2, head_norm="gn", num_classes=1)
method = build_method("supervised", model, {})
opt = torch.optim.Adam(method.trainable_parameters(), lr=1e-3)
times = []
for i in range(steps + 2):
    t = time.perf_counter()
    losses = method.training_step(batch, None, i, 100)
    opt.zero_grad(); losses["loss"].backward(); opt.step()
    times.append(time.perf_counter() - t)
times = sorted(times[2:])
print(times[len(times) // 2])
"""

BUSY = r"""
import time, torch
torch.set_num_threads(1)
a = torch.rand(512, 512)
end = time.time() + 3600
while time.time() < end:
    a = (a @ a).clamp_(-1, 1)
"""


def run(threads: int, policy: str, busy: bool, steps: int, size: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": policy}
    other = None
    if busy:
        other = subprocess.Popen(
            [sys.executable, "-c", BUSY],
            env={**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
        )
        time.sleep(2.0)
    try:
        out = subprocess.run(
            [sys.executable, "-c", WORKER, str(steps), str(size)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        )
    finally:
        if other is not None:
            other.kill()
            other.wait()
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    print(
        f"# {datetime.date.today()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load before start {os.getloadavg()[0]:.2f}"
    )
    print("| threads | wait policy | alone s/step | beside 1 busy process s/step | slowdown |")
    print("|---:|---|---:|---:|---:|")
    for threads in (1, 2):
        for policy in ("ACTIVE", "PASSIVE"):
            alone = run(threads, policy, False, args.steps, args.size)
            shared = run(threads, policy, True, args.steps, args.size)
            print(
                f"| {threads} | {policy} | {alone:.3f} | {shared:.3f} | {shared / alone:.1f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
