"""Training-step time of SSMD vs the supervised baseline, with a breakdown of SSMD's step.

Same detector for both (the engine's default CPU model: ResNet-18 width 0.25, FPN 64, 2 head
convs, anchors 8..128, softmax), same labeled batch (``B`` images of ``S x S`` px with 20
random boxes each); SSMD also gets ``B`` unlabeled images. A step is ``training_step`` +
``backward`` + ``SGD.step`` (+ the EMA teacher update for SSMD).

The breakdown re-runs SSMD's step piece by piece with the method's own public pieces
(``make_views``, ``model``, ``teacher_predictions``, ``consistency``), timing each:

* views: rotation, flip and cutout of both batches (Algorithm 1 lines 1-2);
* student forward: labeled + unlabeled views, with the noisy residual blocks;
* supervised loss: anchor matching + focal / smooth-L1 (line 10);
* adversarial pass: the extra teacher forward with activations + backward to the input
  (Eq. (8)-(9)), labeled + unlabeled;
* teacher forward: the no-grad teacher forwards on the perturbed views + ``hflip``;
* consistency: Eq. (4)-(5) on both batches;
* student backward: of ``sup + lambda * cons``;
* optimiser + EMA: ``SGD.step`` + Eq. (2).

The breakdown uses ``tau = 0`` so that the adversarial pass runs on every image (with the
default 0.95 a randomly initialised student has no confident anchor, every ``r_adv`` is 0 and
the pass is skipped; late in training it runs on most images).

Medians over ``--repeats`` steps after ``--warmup`` steps, in one process; the five step
variants run round-robin (one step each in turn) so they share the load of other jobs.

Run:  OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_ssmd_step.py
      [--size 256] [--batch 4] [--repeats 9] [--warmup 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ssmd.methods.base import Method
from ssmd.methods.ssmd import SSMD
from ssmd.methods.supervised import Supervised
from ssmd.models import build_retinanet
from ssmd.structures.sample import Batch, Sample, collate


def _model() -> torch.nn.Module:
    return build_retinanet(
        "resnet18",
        width_multiplier=0.25,
        fpn_channels=64,
        head_convs=2,
        anchor_sizes=(8, 16, 32, 64, 128),
    )


def _batch(n: int, size: int, labeled: bool, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        if labeled:
            xy = torch.rand(20, 2, generator=g) * (size - 64)
            wh = 8 + torch.rand(20, 2, generator=g) * 56
            boxes = torch.cat([xy, xy + wh], dim=1)  # (20, 4) xyxy
            labels = torch.ones(20, dtype=torch.int64)
        else:
            boxes, labels = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
        image = torch.randn(3, size, size, generator=g)
        samples.append(Sample(image, boxes, labels, image_id=i, is_labeled=labeled))
    return collate(samples)


def _full_step(
    method: Method, opt: torch.optim.Optimizer, lab: Batch, unl: Batch | None, step: int
) -> None:
    losses = method.training_step(lab, unl, step, 100)
    opt.zero_grad(set_to_none=True)
    losses["loss"].backward()
    opt.step()
    method.after_step(step)


class _Clock:
    """Accumulates wall time per piece name for the current step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self._name = ""
        self._t0 = 0.0

    def __call__(self, name: str) -> _Clock:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        step = self.steps[-1]
        step[self._name] = step.get(self._name, 0.0) + time.perf_counter() - self._t0


def _breakdown(
    method: SSMD, opt: torch.optim.Optimizer, lab: Batch, unl: Batch, warmup: int, repeats: int
) -> dict[str, float]:
    """Median seconds per step of each piece (pieces run for both batches are summed)."""
    clock = _Clock()
    iap = method.iap
    for i in range(warmup + repeats):
        clock.steps.append({})
        method.train()
        with clock("views"):
            v_l = method.make_views(lab.images, list(lab.boxes), list(lab.labels))
            v_u = method.make_views(unl.images)
        with clock("student forward"):
            s_l = method.model(v_l.student)
            s_u = method.model(v_u.student)
        assert v_l.boxes is not None and v_l.labels is not None
        targets = [{"boxes": b, "labels": c} for b, c in zip(v_l.boxes, v_l.labels, strict=True)]
        with clock("supervised loss"):
            sup = method.model.loss(s_l, targets)  # type: ignore[operator]
        method.iap = True
        with clock("adv+teacher"):  # adversarial pass + final teacher forward
            t_l = method.teacher_predictions(v_l, s_l)
            t_u = method.teacher_predictions(v_u, s_u)
        method.iap = False
        with clock("teacher forward (no-grad)"):  # the final forward alone, to split the two
            method.teacher_predictions(v_l, s_l)
            method.teacher_predictions(v_u, s_u)
        method.iap = iap
        with clock("consistency"):
            cons = method.consistency(s_l, t_l) + method.consistency(s_u, t_u)
        loss: Tensor = sup["loss_cls"] + sup["loss_box"] + 0.5 * cons
        opt.zero_grad(set_to_none=True)
        with clock("student backward"):
            loss.backward()
        with clock("optimiser + EMA"):
            opt.step()
            method.after_step(i)
    kept = clock.steps[warmup:]
    for st in kept:
        st["adversarial pass"] = st.pop("adv+teacher") - st["teacher forward (no-grad)"]
    return {k: statistics.median(st[k] for st in kept) for k in kept[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lab = _batch(args.batch, args.size, True, 1)
    unl = _batch(args.batch, args.size, False, 2)
    base = _model()

    variants: dict[str, dict[str, Any] | None] = {
        "supervised (B labeled)": None,
        "SSMD defaults (tau 0.95: no confident anchor at init, adversarial pass skipped)": {},
        "SSMD, adversarial pass on every image (tau 0)": {"tau": 0.0},
        "SSMD without adversarial perturbation": {"iap": False},
        "SSMD without IAP and NRB": {"iap": False, "feature_noise": "none"},
    }
    runners: dict[str, Callable[[int], None]] = {}
    for name, kw in variants.items():
        method: Method = (
            Supervised(copy.deepcopy(base)) if kw is None else SSMD(copy.deepcopy(base), **kw)
        )
        method.train()
        opt = torch.optim.SGD(method.trainable_parameters(), lr=1e-3)
        unlabeled = None if kw is None else unl
        runners[name] = lambda i, m=method, o=opt, u=unlabeled: _full_step(m, o, lab, u, i)
    # round-robin, so every variant sees the same load from other jobs on the machine
    times: dict[str, list[float]] = {name: [] for name in runners}
    for i in range(args.warmup + args.repeats):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(i)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    rows = [(name, statistics.median(ts)) for name, ts in times.items()]
    t_sup = rows[0][1]

    m = SSMD(copy.deepcopy(base), tau=0.0).train()
    opt = torch.optim.SGD(m.trainable_parameters(), lr=1e-3)
    parts = _breakdown(m, opt, lab, unl, args.warmup, args.repeats)

    print(
        f"resnet18 width 0.25, FPN 64, 2 head convs, {args.size} px, batch {args.batch} labeled"
        f" + {args.batch} unlabeled, {args.threads} threads, torch {torch.__version__},"
        f" python {platform.python_version()}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(
        f"median of {args.repeats} steps after {args.warmup} warm-up steps, variants interleaved\n"
    )
    print("| step | seconds | ratio to supervised |\n|---|---:|---:|")
    for name, t in rows:
        label = name if variants[name] is None else f"{name} (B labeled + B unlabeled)"
        print(f"| {label} | {t:.3f} | {t / t_sup:.2f}x |")
    total = sum(parts.values())
    print(f"\nSSMD step with tau 0, piece by piece (medians; sum {total:.3f} s)\n")
    print("| piece | seconds | share |\n|---|---:|---:|")
    order = [
        "views",
        "student forward",
        "supervised loss",
        "adversarial pass",
        "teacher forward (no-grad)",
        "consistency",
        "student backward",
        "optimiser + EMA",
    ]
    for k in order:
        print(f"| {k} | {parts[k]:.3f} | {parts[k] / total:.0%} |")


if __name__ == "__main__":
    main()
