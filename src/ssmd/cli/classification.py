"""The classification side of ``ssmd train / predict / evaluate`` (``task: classification``).

``ssmd`` dispatches here when the config says ``task: classification`` (train) or the
checkpoint is a classification one (predict, evaluate):

* ``ssmd predict --checkpoint best.pt --format medmnist data.npz --out probs.csv [--viz DIR]``
  writes one row of class probabilities per image (and, with ``--viz``, Grad-CAM overlays of
  the first :data:`MAX_VIZ` images).
* ``ssmd evaluate --checkpoint best.pt`` re-evaluates on the run's own test part;
  ``--format F SRC`` evaluates on SRC instead (its official test part for MedMNIST files, every
  image otherwise).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from ssmd.data.classification import ClassificationDataset, build_classification_dataset

__all__ = ["MAX_VIZ", "checkpoint_task", "cmd_evaluate", "cmd_predict"]

MAX_VIZ = 64
"""Grad-CAM overlays written by ``ssmd predict --viz`` (the first images of SRC)."""


def checkpoint_task(path: str | None) -> str:
    """The task a checkpoint was trained for (its ``task`` field; ``detection`` when it has
    none, for a missing path, or for a file that is not there)."""
    if not path or not Path(path).is_file():
        return "detection"
    from ssmd.engine.checkpoint import load_checkpoint

    return str(load_checkpoint(path).get("task", "detection"))


def _source(fmt: str, src: str, config: dict[str, Any]) -> ClassificationDataset:
    data = config["data"]
    size = data.get("image_size")
    if fmt == "synthetic_cls":
        syn = {**dict(data.get("synthetic") or {}), "n_images": int(src)}
        return build_classification_dataset(fmt, None, image_size=int(size or 32), **syn)
    return build_classification_dataset(fmt, src, image_size=int(size) if size else None)


def cmd_predict(args: argparse.Namespace) -> int:
    """``ssmd predict`` with a classification checkpoint: probabilities CSV (+ Grad-CAM PNGs)."""
    import torch

    from ssmd.models.gradcam import write_gradcam_overlays
    from ssmd.tasks.classification import Normalizer, load_classifier, predict_probabilities

    if getattr(args, "backend", "pytorch") == "onnxruntime":
        from ssmd.cli.export import load_onnx_classifier

        if args.viz:
            raise ValueError("--viz (Grad-CAM) needs gradients: use --backend pytorch")
        model, state = load_onnx_classifier(args.checkpoint)
    else:
        model, state = load_classifier(args.checkpoint, which=args.model)
    config = state["config"]
    dataset = _source(args.format, args.src, config)
    norm = Normalizer(config["data"]["mean"], config["data"]["std"], dataset.in_channels)
    idx = list(range(len(dataset)))
    probs = predict_probabilities(
        model, dataset, idx, norm, dataset.multi_label, int(getattr(args, "batch_size", 256))
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(state.get("class_names", dataset.class_names))
    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "predicted", *[f"prob_{c}" for c in names]])
        for i, row in zip(idx, probs, strict=True):
            top = (
                "|".join(n for n, p in zip(names, row, strict=True) if p >= 0.5)
                if dataset.multi_label
                else names[int(row.argmax())]
            )
            w.writerow([dataset.ids[i], top, *[f"{float(p):.6f}" for p in row]])
    print(f"wrote class probabilities of {len(idx)} images to {out} (network: {args.model})")
    if args.viz:
        sel = idx[:MAX_VIZ]
        x, _ = dataset.tensors(sel)
        with torch.no_grad():
            xn = norm(x)
        write_gradcam_overlays(model, x, xn, [dataset.ids[i] for i in sel], args.viz)
        print(
            f"wrote {len(sel)} Grad-CAM overlays (image | heatmap of the predicted class) to {args.viz}"
        )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``ssmd evaluate --checkpoint`` of a classification run (module docstring)."""
    from ssmd.evaluation import format_metrics_table
    from ssmd.tasks.classification import (
        build_classification_data,
        evaluate_classifier,
        load_classifier,
    )

    model, state = load_classifier(args.checkpoint, which=args.model)
    config = state["config"]
    if args.src is None:
        dataset, _ = build_classification_data(config)
        test = state["split"]["test"]
        idx = [dataset.index_of(n) for n in test]
        where = "the run's test part"
    else:
        if args.format is None:
            raise SystemExit("ssmd evaluate --checkpoint CKPT SRC needs --format F")
        dataset = _source(args.format, args.src, config)
        if dataset.parts is not None:
            idx = [i for i, p in enumerate(dataset.parts) if p == "test"]
            where = f"the test part of {args.src}"
        else:
            idx = list(range(len(dataset)))
            where = f"all {len(idx)} images of {dataset.source}"  # ISIC: the part read
    metrics, _ = evaluate_classifier(model, dataset, idx, config)
    print(f"{args.model} network of {args.checkpoint} on {where}")
    print(format_metrics_table(metrics))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2))
    return 0
