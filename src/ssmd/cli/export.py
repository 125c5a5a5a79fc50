"""``ssmd export`` and the onnxruntime backend of ``ssmd predict``."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = [
    "add_export_parser",
    "cmd_export",
    "load_onnx_classifier",
    "load_onnx_detector",
    "onnx_task",
]


def add_export_parser(sub: Any) -> None:
    """The ``export`` sub-command."""
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX (RetinaNet detectors, classifiers)",
        description="Write the checkpoint's network as an ONNX file. Detectors: dense class "
        "probabilities and decoded boxes per pyramid level in the graph; NMS is a small Python "
        "post-step (ssmd predict --backend onnxruntime runs it; see ssmd.models.export). "
        "Classifiers: logits and probabilities. The file is checked against PyTorch with "
        "onnxruntime after writing. Needs the onnx extra: pip install 'ssmd[onnx]'.",
    )
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a run")
    p.add_argument("--format", default="onnx", choices=("onnx",), help="export format (onnx)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--model", default="student", choices=("student", "teacher"))
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument(
        "--no-verify", action="store_true", help="skip the onnxruntime-vs-PyTorch comparison"
    )
    p.add_argument(
        "--nms-in-graph",
        action="store_true",
        help="detectors: end the graph with ONNX NonMaxSuppression (opset >= 10); outputs boxes, "
        "scores, labels, batch_index (only the cap over all classes stays in Python)",
    )


def cmd_export(args: argparse.Namespace) -> int:
    """Export, verify and say how far onnxruntime is from PyTorch."""
    from ssmd.tasks.export import export_checkpoint

    summary = export_checkpoint(
        args.checkpoint,
        args.out,
        args.model,
        opset=args.opset,
        verify=not args.no_verify,
        nms_in_graph=args.nms_in_graph,
    )
    line = f"wrote {summary['out']} ({summary['task']}, {args.model} network, opset {args.opset})"
    if "max_abs_diff" in summary:
        line += (
            f"; onnxruntime vs PyTorch on a random {tuple(summary['inputs'])} input: "
            f"max |difference| {summary['max_abs_diff']:.2e}"
        )
    print(line)
    return 0


def load_onnx_detector(path: str) -> tuple[Any, dict[str, Any]]:
    """``(detector, state)`` for ``ssmd predict --backend onnxruntime``: state holds the
    training config stored in the file (resize and normalisation of the inputs).

    Raises:
        ValueError: not an ONNX detector written by ``ssmd export``.
    """
    from ssmd.models.export import OnnxDetector

    _check_suffix(path)
    model = OnnxDetector(path)
    return model, {"config": model.config}


def _check_suffix(path: str) -> None:
    if not str(path).endswith(".onnx"):
        raise ValueError(f"--backend onnxruntime needs an .onnx file (ssmd export), got {path}")


def onnx_task(path: str) -> str:
    """The task of an ``.onnx`` file from ``ssmd export`` (``detection`` / ``classification``)."""
    from ssmd.models.export import onnx_kind

    _check_suffix(path)
    return onnx_kind(path)


def load_onnx_classifier(path: str) -> tuple[Any, dict[str, Any]]:
    """``(classifier, state)`` for ``ssmd predict --backend onnxruntime`` with a classifier."""
    from ssmd.models.export import OnnxClassifier

    _check_suffix(path)
    model = OnnxClassifier(path)
    return model, {"config": model.config, "class_names": model.class_names}
