"""Summary statistics of a dataset (what ``ssmd data stats`` prints)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch

from ssmd.data.datasets.base import DetectionDataset

__all__ = ["BOX_SIZE_BINS", "OBJECT_COUNT_BINS", "dataset_stats", "format_stats"]

OBJECT_COUNT_BINS = (0, 1, 10, 20, 40, 80, 160)
"""Lower edges of the objects-per-image histogram bins (the last bin is open)."""

BOX_SIZE_BINS = (0, 8, 16, 32, 64, 128)
"""Lower edges (px) of the box-size histogram, size = ``sqrt(w * h)`` (last bin open)."""


def _histogram(values: list[float], edges: tuple[int, ...], integer: bool) -> dict[str, int]:
    """Counts per bin ``[edges[k], edges[k+1])``; labels ``"10-19"`` (integer) or ``"8-16"``."""
    labels = []
    for lo, hi in zip(edges, (*edges[1:], None), strict=True):
        if hi is None:
            labels.append(f">={lo}")
        elif integer:
            labels.append(str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}")
        else:
            labels.append(f"{lo}-{hi}")
    counts = [0] * len(edges)
    for v in values:
        k = sum(1 for e in edges[1:] if v >= e)  # index of the bin holding v
        counts[k] += 1
    return dict(zip(labels, counts, strict=True))


def dataset_stats(ds: DetectionDataset) -> dict[str, Any]:
    """Counts and histograms of ``ds`` from its annotations (no pixels are decoded).

    Returns:
        A JSON-ready dict: ``format``, ``images``, ``labeled_images``, ``objects``,
        ``ignore_regions``, ``objects_per_image`` (min/mean/median/max),
        ``objects_per_image_histogram`` (bins :data:`OBJECT_COUNT_BINS`),
        ``box_size_histogram`` (``sqrt(w*h)`` px, bins :data:`BOX_SIZE_BINS`),
        ``box_size_coco`` (small < 32², medium < 96², large areas), ``objects_per_category``,
        ``image_sizes`` (``"WxH"`` -> count, most frequent first).
    """
    counts: list[int] = []
    sizes: list[float] = []
    areas: list[float] = []
    per_cat: Counter[int] = Counter()
    n_ignore = 0
    for i in range(len(ds)):
        boxes, labels = ds.annotation(i)  # (N, 4) xyxy, (N,)
        counts.append(int(boxes.shape[0]))
        wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)  # (N, 2)
        area = wh.prod(dim=1).to(torch.float64)
        areas += area.tolist()
        sizes += [math.sqrt(a) for a in area.tolist()]
        per_cat.update(labels.tolist())
        n_ignore += int(ds.ignore_regions(i).shape[0])
    img_sizes = Counter(f"{r.width}x{r.height}" for r in ds.records)
    ordered = sorted(counts)
    n = len(counts)
    median = (
        0.0
        if n == 0
        else float(ordered[n // 2])
        if n % 2
        else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    )
    names = {k: str(c.get("name", c.get("id"))) for k, c in enumerate(ds.categories, start=1)}
    return {
        "format": ds.format_name,
        "images": n,
        "labeled_images": sum(ds.labeled_flags()),
        "objects": sum(counts),
        "ignore_regions": n_ignore,
        "objects_per_image": {
            "min": min(counts, default=0),
            "mean": sum(counts) / n if n else 0.0,
            "median": median,
            "max": max(counts, default=0),
        },
        "objects_per_image_histogram": _histogram(
            [float(c) for c in counts], OBJECT_COUNT_BINS, True
        ),
        "box_size_histogram": _histogram(sizes, BOX_SIZE_BINS, False),
        "box_size_coco": {
            "small": sum(1 for a in areas if a < 32**2),
            "medium": sum(1 for a in areas if 32**2 <= a < 96**2),
            "large": sum(1 for a in areas if a >= 96**2),
        },
        "objects_per_category": {names.get(k, str(k)): per_cat[k] for k in sorted(per_cat)},
        "image_sizes": dict(img_sizes.most_common()),
    }


def format_stats(stats: dict[str, Any]) -> str:
    """:func:`dataset_stats` output as a short markdown report."""
    opi = stats["objects_per_image"]
    lines = [
        f"format: {stats['format']}",
        f"images: {stats['images']} ({stats['labeled_images']} labeled)",
        f"objects: {stats['objects']} (ignore regions: {stats['ignore_regions']})",
        f"objects/image: min {opi['min']}, median {opi['median']:g}, "
        f"mean {opi['mean']:.1f}, max {opi['max']}",
        "",
    ]

    def table(title: str, key: str, hist: dict[str, int]) -> None:
        lines.extend([f"| {title} | {key} |", "|---|---:|"])
        lines.extend(f"| {k} | {v} |" for k, v in hist.items())
        lines.append("")

    table("objects per image", "images", stats["objects_per_image_histogram"])
    table("box size sqrt(w*h) px", "boxes", stats["box_size_histogram"])
    table("COCO area class", "boxes", stats["box_size_coco"])
    table("category", "objects", stats["objects_per_category"])
    table("image size WxH", "images", stats["image_sizes"])
    return "\n".join(lines).rstrip() + "\n"
