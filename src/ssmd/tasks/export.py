"""``ssmd export``: a checkpoint of a detection or classification run as an ONNX file.

The graph and the NMS post-step are described in :mod:`ssmd.models.export`. After writing,
the file is run once with onnxruntime on a random input and compared with PyTorch
(:func:`verify_onnx`): the largest absolute difference of every output is reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssmd.engine.checkpoint import load_checkpoint
from ssmd.models.export import (
    DEFAULT_OPSET,
    ClassifierExport,
    RetinaNetExport,
    RetinaNetExportNMS,
    export_classifier,
    export_detector,
    require,
)

__all__ = ["export_checkpoint", "verify_onnx"]


def _pad128(n: int) -> int:
    return max(128, -(-int(n) // 128) * 128)


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    which: str = "student",
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    nms_in_graph: bool = False,
) -> dict[str, Any]:
    """Export ``checkpoint``'s ``which`` network to ONNX at ``out``.

    ``nms_in_graph``: a detector's graph ends with ONNX ``NonMaxSuppression``
    (:class:`~ssmd.models.export.RetinaNetExportNMS`) instead of the dense decoded maps.

    Returns:
        ``{"task", "out", "inputs", "max_abs_diff"}`` (the last only with ``verify``).

    Raises:
        ValueError: a detector that does not export (Faster R-CNN), or a bad checkpoint.
        ImportError: onnx (or onnxruntime, with ``verify``) is missing.
    """
    require("onnx")
    if verify:
        require("onnxruntime")
    state = load_checkpoint(checkpoint)
    task = str(state.get("task", "detection"))
    wrapper: torch.nn.Module
    if task == "classification":
        from ssmd.tasks.classification import load_classifier

        model, state = load_classifier(checkpoint, which)
        size = int(state["config"]["data"].get("image_size") or 32)
        channels = int(state["in_channels"])
        path = export_classifier(
            model,
            out,
            state["config"],
            channels,
            size,
            bool(state.get("multi_label", False)),
            state.get("class_names", ()),
            opset=opset,
        )
        wrapper = ClassifierExport(model, bool(state.get("multi_label", False)))
        shape = (2, channels, size, size)
    elif task == "detection":
        from ssmd.tasks.detection import load_model

        det, state = load_model(checkpoint, which)
        side = _pad128(int(state["config"]["data"].get("input_size", 256)))
        path = export_detector(
            det, out, state["config"], (side, side), opset=opset, nms_in_graph=nms_in_graph
        )
        graph = RetinaNetExportNMS if nms_in_graph else RetinaNetExport
        wrapper = graph(det)  # type: ignore[arg-type]  # export_detector checked it
        shape = (2, 3, side, side)
    else:
        raise ValueError(f"{checkpoint}: field 'task' = {task!r}: no ONNX export for this task")
    summary: dict[str, Any] = {"task": task, "out": str(path), "inputs": list(shape)}
    if verify:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        summary["max_abs_diff"] = verify_onnx(wrapper, path, x)
    return summary


@torch.no_grad()
def verify_onnx(module: torch.nn.Module, path: str | Path, images: torch.Tensor) -> float:
    """Largest absolute difference between ``module(images)`` and onnxruntime's outputs."""
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    module.eval()
    ref = module(images)
    got = session.run(None, {"images": images.numpy().astype(np.float32)})
    if len(got) != len(ref):
        raise ValueError(f"{path}: {len(got)} outputs, PyTorch gives {len(ref)}")
    for g, r in zip(got, ref, strict=True):
        if tuple(g.shape) != tuple(r.shape):
            raise ValueError(
                f"{path}: onnxruntime gives an output of shape {tuple(g.shape)}, PyTorch "
                f"{tuple(r.shape)} (a different number of detections kept by NMS?)"
            )
    return max(
        float(np.abs(g.astype(np.float64) - r.numpy()).max()) if g.size else 0.0
        for g, r in zip(got, ref, strict=True)
    )
