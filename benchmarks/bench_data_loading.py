"""Dataset loading throughput: the real DSB 2018 folder and the synthetic generator.

Measures, on one process:

* DSB ``first load``: listing + image headers + decoding every mask PNG (no disk cache);
* DSB ``cache build``: the same with ``cache_dir`` (decodes masks, writes the JSON cache);
* DSB ``cached load``: constructing again from the cache (no mask decoded);
* DSB ``samples``: ``dataset[i]`` for every image (image decode + boxes from memory);
* synthetic ``generate``: :func:`generate_image` per image (no disk);
* synthetic ``first load``: generate + compress + write the ``.npz`` cache;
* synthetic ``cached load``: ``dataset[i]`` from the ``.npz`` cache.

Prints a markdown table, then the same numbers as JSON. Rates are per wall-clock
second; the CPU seconds of this process are reported beside them, since on a shared
machine wall time includes waiting for a core. The OS page cache is not flushed, so
"first load" means "ssmd's caches empty", not "cold disk".

Usage::

    python benchmarks/bench_data_loading.py --root ../shared/data/dsb2018/stage1_train
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ssmd.data import DSB2018Dataset, SyntheticNucleiDataset
from ssmd.data.datasets.synthetic import SyntheticConfig, generate_image

_LAST_CPU = [0.0]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn``; returns its result and wall seconds (CPU seconds go to ``_LAST_CPU``)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    _LAST_CPU[0] = time.process_time() - c0
    return out, time.perf_counter() - t0


def _row(name: str, images: int, boxes: int, seconds: float) -> dict[str, Any]:
    return {
        "step": name,
        "images": images,
        "boxes": boxes,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(_LAST_CPU[0], 3),
        "images_per_s": round(images / seconds, 1) if seconds > 0 else None,
        "boxes_per_s": round(boxes / seconds, 1) if seconds > 0 else None,
        "ms_per_image": round(1000 * seconds / images, 2) if images else None,
    }


def bench_dsb(root: Path) -> list[dict[str, Any]]:
    rows = []

    def first() -> DSB2018Dataset:
        ds = DSB2018Dataset(root)
        ds.preload()
        return ds

    ds, t = _timed(first)
    n_boxes = sum(int(ds.annotation(i)[0].shape[0]) for i in range(len(ds)))
    rows.append(_row("dsb2018 first load (decode all masks)", len(ds), n_boxes, t))
    with tempfile.TemporaryDirectory() as cache:
        _, t = _timed(lambda: DSB2018Dataset(root, cache_dir=cache))
        rows.append(_row("dsb2018 cache build (decode + write cache)", len(ds), n_boxes, t))
        cached, t = _timed(lambda: DSB2018Dataset(root, cache_dir=cache))
        assert cached.cache_misses == 0
        rows.append(_row("dsb2018 cached load (from cache file)", len(ds), n_boxes, t))
    _, t = _timed(lambda: [ds[i] for i in range(len(ds))])
    rows.append(_row("dsb2018 samples (image decode + boxes)", len(ds), n_boxes, t))
    return rows


def bench_synthetic(n: int, size: int) -> list[dict[str, Any]]:
    rows = []
    cfg = SyntheticConfig(image_size=(size, size))
    gens, t = _timed(lambda: [generate_image(i, 0, cfg) for i in range(n)])
    n_boxes = sum(int(g.boxes.shape[0]) for g in gens)
    rows.append(_row(f"synthetic generate ({size}x{size}, no disk)", n, n_boxes, t))
    with tempfile.TemporaryDirectory() as cache:
        ds = SyntheticNucleiDataset(n, size, seed=0, cache_dir=cache)
        _, t = _timed(lambda: [ds[i] for i in range(n)])
        rows.append(_row("synthetic first load (generate + write .npz)", n, n_boxes, t))
        again = SyntheticNucleiDataset(n, size, seed=0, cache_dir=cache)
        _, t = _timed(lambda: [again[i] for i in range(n)])
        assert again.n_generated == 0
        rows.append(_row("synthetic cached load (read .npz)", n, n_boxes, t))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", type=Path, default=None, help="DSB stage1_train folder (skipped if absent)"
    )
    parser.add_argument("--n-synthetic", type=int, default=200, help="synthetic images to generate")
    parser.add_argument("--size", type=int, default=256, help="synthetic image side")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows: list[dict[str, Any]] = []
    if args.root is not None and args.root.is_dir():
        rows += bench_dsb(args.root)
    rows += bench_synthetic(args.n_synthetic, args.size)

    print("| step | images | boxes | wall s | CPU s | images/s | boxes/s | ms/image |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['step']} | {r['images']} | {r['boxes']} | {r['seconds']:.2f} | "
            f"{r['cpu_seconds']:.2f} | {r['images_per_s']} | {r['boxes_per_s']} | "
            f"{r['ms_per_image']} |"
        )
    meta = {
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "root": str(args.root) if args.root else None,
    }
    print()
    print(json.dumps({"meta": meta, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
