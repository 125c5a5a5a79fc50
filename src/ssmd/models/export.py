"""ONNX export of the 2D detectors and classifiers, and an onnxruntime-backed detector.

**What the graph holds.** For RetinaNet (:class:`RetinaNetExport`) the exported graph takes
normalised images ``images: Tensor[B, 3, H, W]`` (``B``, ``H``, ``W`` dynamic; pad to a
multiple of 128 as the data pipeline does) and returns, for each pyramid level ``l = 0..4``
(``P3..P7``), ``scores_l: (B, H_l W_l A, K)`` (foreground class probabilities: softmax
without the background column, or sigmoid) and ``boxes_l: (B, H_l W_l A, 4)`` (``xyxy``
pixels of the padded input, decoded by Eq. (3) from the level's anchors, which the graph
computes from the feature-map sizes). That is the detector's dense output plus decode.

**NMS: a post-step in Python by default** (:func:`select_detections`, ~20 lines; torch +
torchvision, which ssmd needs anyway): per level the ``topk_candidates`` best (anchor, class)
pairs, then score threshold, clipping to each image's *unpadded* size, dropping empty boxes,
class-wise NMS and the per-image cap — exactly :meth:`RetinaNet.postprocess`, whatever the
padding. **Or in the graph** (``nms_in_graph=True``, ``ssmd export --nms-in-graph``; ONNX
``NonMaxSuppression``, opset >= 10; :class:`RetinaNetExportNMS`): the per-level top-k,
threshold, clipping and class-wise NMS run in the graph, which returns ``boxes, scores,
labels, batch_index`` of the kept detections; only the cap of ``detections_per_img`` over all
classes is left to Python (:func:`cap_detections`: a sort). The graph clips to the padded
input size (it is not given the unpadded sizes), so on padded images it can differ from
``postprocess`` for boxes that cross the padding; on unpadded images it gives the same
detections (tested).

**Faster R-CNN is not exported** (:func:`export_detector` raises, saying why): its second
stage runs on the proposals that NMS keeps for each image — a data-dependent number of
regions per image fed to RoIAlign — so the graph would need NMS and per-image dynamic
shapes inside, and the two-stage split of raw outputs and post-processing would be lost.

**Classifiers** (:class:`ClassifierExport`) return ``logits: (B, K)`` and ``probabilities``
(softmax, or sigmoid for a multi-label model).

onnx and onnxruntime are the ``onnx`` extra (``pip install 'ssmd[onnx]'``), imported lazily.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from ssmd.models.classifiers import Classifier
from ssmd.models.detectors.retinanet import RetinaNet
from ssmd.structures.boxes import clip_boxes
from ssmd.structures.dense import flatten_levels

__all__ = [
    "DEFAULT_OPSET",
    "ONNX_EXTRA",
    "ClassifierExport",
    "OnnxClassifier",
    "OnnxDetector",
    "RetinaNetExport",
    "RetinaNetExportNMS",
    "cap_detections",
    "export_classifier",
    "export_detector",
    "onnx_kind",
    "require",
    "select_detections",
]

ONNX_EXTRA = "pip install 'ssmd[onnx]' (or: pip install onnx onnxruntime)"
"""How to install the optional ONNX dependencies (named in every missing-package message)."""

DEFAULT_OPSET = 17


def require(module: str) -> Any:
    """Import ``onnx`` / ``onnxruntime`` lazily, or say how to install them.

    Raises:
        ImportError: the package is missing (the message names the extra).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is not installed; ONNX export needs it: {ONNX_EXTRA}") from exc


class RetinaNetExport(nn.Module):
    """RetinaNet dense outputs + decode, as exported (module docstring).

    Anchors are recomputed in the graph from each level's feature size, in float64 as
    :class:`~ssmd.models.detectors.anchors.AnchorGenerator` does, so any input size works.
    """

    def __init__(self, model: RetinaNet) -> None:
        super().__init__()
        if model.spatial_dims != 2:
            raise ValueError("ONNX export covers 2D detectors only")
        self.model = model
        gen = model.anchor_generator
        self.strides = gen.strides
        for lvl in range(gen.num_levels):
            self.register_buffer(f"cell_{lvl}", gen.cell_anchors(lvl), persistent=False)  # (A, 4)

    def _anchors(self, level: int, h: Any, w: Any) -> Tensor:
        stride = float(self.strides[level])
        cell: Tensor = getattr(self, f"cell_{level}")  # (A, 4) float64
        ys = (torch.arange(h, dtype=torch.float64) + 0.5) * stride  # (H_l,)
        xs = (torch.arange(w, dtype=torch.float64) + 0.5) * stride  # (W_l,)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (H_l, W_l)
        cx, cy = gx.reshape(-1), gy.reshape(-1)  # (HW,)
        shifts = torch.stack([cx, cy, cx, cy], dim=1)  # (HW, 4)
        anchors = (shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4)  # (HW * A, 4)
        return anchors.to(torch.float32)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """``(scores_0, boxes_0, ..., scores_4, boxes_4)`` of ``images: Tensor[B, 3, H, W]``."""
        m = self.model
        outputs = m(images)
        probs = m.class_probs(outputs)
        result: list[Tensor] = []
        for lvl, (prob, deltas) in enumerate(zip(probs, outputs.box_deltas, strict=True)):
            scores = flatten_levels([prob])  # (B, HWA, C')
            if m.activation == "softmax":
                scores = scores[..., 1:]  # (B, HWA, K)
            flat_deltas = flatten_levels([deltas])  # (B, HWA, 4)
            anchors = self._anchors(lvl, deltas.shape[-2], deltas.shape[-1])  # (HWA, 4)
            boxes = m.box_coder.decode(flat_deltas, anchors[None])  # (B, HWA, 4)
            result += [scores, boxes]
        return tuple(result)


def _topk_min(x: Tensor, k: int, axis: int) -> Any:
    """``min(k, x.shape[axis])`` that stays a graph value while tracing (torchvision's trick)."""
    if not torch.jit.is_tracing():
        return min(k, int(x.shape[axis]))
    n = torch._shape_as_tensor(x)[axis].unsqueeze(0)
    return torch.min(torch.cat((torch.tensor([k], dtype=n.dtype), n), 0))


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (opset >= 10; corner boxes): eager PyTorch does the same
    with torchvision, so the traced graph and the module agree.

    ``boxes (B, N, 4)``, ``scores (B, C, N)`` -> ``selected (M, 3)`` int64 rows
    ``(batch, class, box)``: per image and class, boxes with score ``> score_thresh`` by
    greedy NMS at IoU ``> iou``, at most ``max_out`` of them, best first.
    """

    @staticmethod
    def forward(
        ctx: Any, boxes: Tensor, scores: Tensor, max_out: Tensor, iou: Tensor, thresh: Tensor
    ) -> Tensor:
        from torchvision.ops import nms

        rows = []
        for b in range(int(scores.shape[0])):
            for c in range(int(scores.shape[1])):
                s = scores[b, c]  # (N,)
                idx = (s > float(thresh)).nonzero().reshape(-1)
                kept = idx[nms(boxes[b, idx], s[idx], float(iou))][: int(max_out)]
                rows.append(
                    torch.stack([torch.full_like(kept, b), torch.full_like(kept, c), kept], 1)
                )
        return torch.cat(rows) if rows else torch.zeros((0, 3), dtype=torch.int64)

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, max_out: Any, iou: Any, thresh: Any) -> Any:
        return g.op("NonMaxSuppression", boxes, scores, max_out, iou, thresh, center_point_box_i=0)


class RetinaNetExportNMS(RetinaNetExport):
    """RetinaNet with the whole of :meth:`RetinaNet.postprocess` but the per-image cap in the
    graph: per-level top-k, threshold, clipping to the *input* size, class-wise ONNX
    ``NonMaxSuppression``.

    Returns ``(boxes (M, 4), scores (M,), labels (M,) int64, batch_index (M,) int64)`` for the
    whole batch. Equal to ``postprocess`` when the images are not padded (clipping is to the
    padded input here; :func:`ssmd.models.predict.predict_samples` clips to the original size
    afterwards) and when an image keeps at most ``detections_per_img`` boxes per class (the
    cap over all classes is the post-step :func:`cap_detections`).
    """

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        m = self.model
        dense = super().forward(images)
        all_scores, all_labels, all_boxes = [], [], []
        for lvl in range(len(dense) // 2):
            scores, boxes = dense[2 * lvl], dense[2 * lvl + 1]  # (B, HWA, K), (B, HWA, 4)
            num_k = int(m.num_classes)
            flat = scores.flatten(1)  # (B, HWA * K)
            top_scores, top_idx = flat.topk(_topk_min(flat, m.topk_candidates, 1), dim=1)
            anchor_idx = torch.div(top_idx, num_k, rounding_mode="floor")  # (B, k)
            gather = anchor_idx.unsqueeze(-1).expand(-1, -1, 4)  # (B, k, 4)
            all_boxes.append(boxes.gather(1, gather))  # (B, k, 4)
            all_scores.append(top_scores)
            all_labels.append(top_idx % num_k)  # 0..K-1
        scores = torch.cat(all_scores, 1)  # (B, N')
        labels = torch.cat(all_labels, 1)  # (B, N')
        boxes = torch.cat(all_boxes, 1)  # (B, N', 4)
        hw = torch._shape_as_tensor(images)[2:].to(boxes.dtype)  # (2,) = (H, W)
        limits = torch.stack([hw[1], hw[0], hw[1], hw[0]])  # (4,) x, y, x, y
        boxes = torch.minimum(boxes.clamp(min=0), limits)  # clip to the input
        nonempty = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])  # (B, N')
        scores = scores * nonempty.to(scores.dtype)  # an empty box falls below the threshold
        classes = torch.arange(int(m.num_classes), device=labels.device)  # (K,)
        per_class = (labels.unsqueeze(1) == classes[None, :, None]).to(scores.dtype)  # (B, K, N')
        class_scores = per_class * scores.unsqueeze(1)  # (B, K, N')
        selected = _NonMaxSuppression.apply(
            boxes,
            class_scores,
            torch.tensor([int(m.detections_per_img)], dtype=torch.int64),
            torch.tensor([float(m.nms_thresh)], dtype=torch.float32),
            torch.tensor([float(m.score_thresh)], dtype=torch.float32),
        )  # (M, 3): batch, class, box
        b, c, k = selected[:, 0], selected[:, 1], selected[:, 2]
        return boxes[b, k], class_scores[b, c, k], c + 1, b


def cap_detections(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    batch_index: Tensor,
    batch_size: int,
    detections_per_img: int,
    image_sizes: Sequence[Sequence[int]] | None = None,
) -> list[dict[str, Tensor]]:
    """The post-step of a graph with NMS: per image, best first, at most
    ``detections_per_img`` over all classes, clipped to ``image_sizes`` when given."""
    out = []
    for i in range(batch_size):
        sel = (batch_index == i).nonzero().reshape(-1)
        order = sel[scores[sel].argsort(descending=True, stable=True)][:detections_per_img]
        bx = boxes[order]
        if image_sizes is not None:
            bx = clip_boxes(bx, tuple(int(v) for v in image_sizes[i]))
        out.append({"boxes": bx, "scores": scores[order], "labels": labels[order]})
    return out


def select_detections(
    levels: Sequence[tuple[Tensor, Tensor]],
    image_sizes: Sequence[Sequence[int]],
    score_thresh: float,
    topk_candidates: int,
    nms_thresh: float,
    detections_per_img: int,
) -> list[dict[str, Tensor]]:
    """The NMS post-step of an exported RetinaNet: :meth:`RetinaNet.postprocess` on decoded boxes.

    Args:
        levels: per level ``(scores (B, HWA, K), boxes (B, HWA, 4) xyxy)``, the graph's outputs.
        image_sizes: ``(H, W)`` of each image before padding (boxes are clipped to it).
        score_thresh, topk_candidates, nms_thresh, detections_per_img: the detector's.

    Returns:
        Per image ``{"boxes": Tensor[M, 4] xyxy, "scores": Tensor[M], "labels": Tensor[M]
        int64 in 1..K}``, sorted by score.
    """
    if not levels:
        return []
    b = int(levels[0][0].shape[0])
    if len(image_sizes) != b:
        raise ValueError(f"got {len(image_sizes)} image_sizes for a batch of {b} images")
    all_scores, all_labels, all_boxes = [], [], []
    for scores, boxes in levels:
        num_k = int(scores.shape[-1])
        flat = scores.reshape(b, -1)  # (B, HWA * K)
        k = min(topk_candidates, int(flat.shape[1]))
        top_scores, top_idx = flat.topk(k, dim=1)  # (B, k)
        anchor_idx = top_idx // num_k  # (B, k)
        gather = anchor_idx[..., None].expand(-1, -1, 4)  # (B, k, 4)
        all_boxes.append(boxes.gather(1, gather))  # (B, k, 4)
        all_scores.append(top_scores)
        all_labels.append(top_idx % num_k + 1)
    s, lab, bx = torch.cat(all_scores, 1), torch.cat(all_labels, 1), torch.cat(all_boxes, 1)
    out = []
    for i in range(b):
        keep = s[i] > score_thresh
        boxes_i = clip_boxes(bx[i][keep], tuple(int(v) for v in image_sizes[i]))
        scores_i, labels_i = s[i][keep], lab[i][keep]
        nonempty = (boxes_i[:, 2:] > boxes_i[:, :2]).all(dim=1)
        boxes_i, scores_i, labels_i = boxes_i[nonempty], scores_i[nonempty], labels_i[nonempty]
        kept = batched_nms(boxes_i, scores_i, labels_i, nms_thresh)[:detections_per_img]
        out.append({"boxes": boxes_i[kept], "scores": scores_i[kept], "labels": labels_i[kept]})
    return out


class ClassifierExport(nn.Module):
    """A classifier as exported: ``(logits (B, K), probabilities (B, K))``."""

    def __init__(self, model: Classifier, multi_label: bool) -> None:
        super().__init__()
        self.model = model
        self.multi_label = multi_label

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        logits, _ = self.model(images)  # (B, K)
        probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)
        return logits, probs


def _export(
    module: nn.Module,
    example: Tensor,
    out: str | Path,
    output_names: list[str],
    dynamic: dict[str, dict[int, str]],
    metadata: dict[str, str],
    opset: int,
) -> Path:
    onnx = require("onnx")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    import warnings

    with warnings.catch_warnings():  # the tracer warns on every shape read; the test checks sizes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(out),
            input_names=["images"],
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load(str(out))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out


def export_detector(
    model: nn.Module,
    out: str | Path,
    config: dict[str, Any],
    example_size: tuple[int, int] = (256, 256),
    opset: int = DEFAULT_OPSET,
    nms_in_graph: bool = False,
) -> Path:
    """Export a RetinaNet to ONNX (module docstring); ``config`` is stored in the file's metadata.

    With ``nms_in_graph`` the graph is :class:`RetinaNetExportNMS` (ONNX ``NonMaxSuppression``,
    opset >= 10): outputs ``boxes, scores, labels, batch_index``.

    Raises:
        ValueError: the detector is not a 2D RetinaNet (Faster R-CNN: see the module docstring).
    """
    if not isinstance(model, RetinaNet):
        raise ValueError(
            f"ONNX export of a {type(model).__name__} is not supported: only RetinaNet "
            "(model.name=retinanet) exports. Faster R-CNN's second stage runs on the proposals "
            "NMS keeps per image (a data-dependent count fed to RoIAlign), which needs NMS and "
            "per-image dynamic shapes inside the graph; predict it with the PyTorch backend"
        )
    n_levels = model.anchor_generator.num_levels
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}}
    wrapper: RetinaNetExport
    if nms_in_graph:
        if opset < 10:
            raise ValueError(f"--opset {opset}: NonMaxSuppression needs opset >= 10")
        wrapper = RetinaNetExportNMS(model).eval()
        names = ["boxes", "scores", "labels", "batch_index"]
        dynamic.update({n: {0: "detections"} for n in names})
    else:
        wrapper = RetinaNetExport(model).eval()
        names = [f"{kind}_{lvl}" for lvl in range(n_levels) for kind in ("scores", "boxes")]
        dynamic.update({n: {0: "batch", 1: f"anchors_{n.split('_')[1]}"} for n in names})
    post = {
        "score_thresh": float(model.score_thresh),
        "topk_candidates": int(model.topk_candidates),
        "nms_thresh": float(model.nms_thresh),
        "detections_per_img": int(model.detections_per_img),
        "num_classes": int(model.num_classes),
        "levels": n_levels,
        "nms_in_graph": bool(nms_in_graph),
    }
    in_ch = int(config.get("model", {}).get("in_channels", 3) or 3)
    example = torch.zeros(2, in_ch, *example_size)  # B = 1 at 1x1 (P7) trips GroupNorm's check
    meta = {
        "ssmd.kind": "detection",
        "ssmd.postprocess": json.dumps(post),
        "ssmd.config": json.dumps(config, default=str),
    }
    return _export(wrapper, example, out, names, dynamic, meta, opset)


def export_classifier(
    model: Classifier,
    out: str | Path,
    config: dict[str, Any],
    in_channels: int,
    image_size: int,
    multi_label: bool,
    class_names: Sequence[str] = (),
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export a classifier to ONNX: ``images (B, C, S, S) -> logits, probabilities``."""
    wrapper = ClassifierExport(model, multi_label).eval()
    example = torch.zeros(1, in_channels, image_size, image_size)
    dynamic = {
        "images": {0: "batch", 2: "height", 3: "width"},
        "logits": {0: "batch"},
        "probabilities": {0: "batch"},
    }
    meta = {
        "ssmd.kind": "classification",
        "ssmd.multi_label": json.dumps(bool(multi_label)),
        "ssmd.class_names": json.dumps(list(class_names)),
        "ssmd.config": json.dumps(config, default=str),
    }
    return _export(wrapper, example, out, ["logits", "probabilities"], dynamic, meta, opset)


def _session(path: str | Path, threads: int | None) -> Any:
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    n = threads if threads is not None else torch.get_num_threads()
    opts.intra_op_num_threads = max(1, int(n))
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a bad file
        raise ValueError(f"{path}: not a loadable ONNX model ({exc})") from exc


def _metadata(session: Any, path: str | Path) -> dict[str, str]:
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if "ssmd.kind" not in meta:
        raise ValueError(
            f"{path}: field 'ssmd.kind' missing: not an ONNX file written by ssmd export"
        )
    return meta


def onnx_kind(path: str | Path) -> str:
    """``"detection"`` or ``"classification"``: what ``ssmd export`` wrote into ``path``.

    Raises:
        ValueError: not an ONNX file, or not one written by ``ssmd export``.
    """
    return _metadata(_session(path, 1), path)["ssmd.kind"]


class OnnxDetector:
    """An exported RetinaNet run by onnxruntime, with the detector's ``forward`` /
    ``postprocess`` interface (what :func:`ssmd.models.predict.predict_samples` calls).

    Args:
        path: the ``.onnx`` file from :func:`export_detector`.
        threads: onnxruntime intra-op threads (default: torch's, i.e. ``ssmd --threads``).

    Attributes:
        config: the training config stored at export (resize and normalisation of inputs).
    """

    training = False

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = _session(path, threads)
        meta = _metadata(self.session, path)
        if meta["ssmd.kind"] != "detection":
            raise ValueError(f"{path}: field 'ssmd.kind' = {meta['ssmd.kind']!r}: not a detector")
        self.config: dict[str, Any] = json.loads(meta["ssmd.config"])
        post = json.loads(meta["ssmd.postprocess"])
        self.score_thresh = float(post["score_thresh"])
        self.topk_candidates = int(post["topk_candidates"])
        self.nms_thresh = float(post["nms_thresh"])
        self.detections_per_img = int(post["detections_per_img"])
        self.num_classes = int(post["num_classes"])
        self.levels = int(post["levels"])
        self.nms_in_graph = bool(post.get("nms_in_graph", False))

    def eval(self) -> OnnxDetector:
        return self

    def train(self, mode: bool = True) -> OnnxDetector:
        if mode:
            raise ValueError("an ONNX detector cannot be trained")
        return self

    def __call__(self, images: Tensor) -> list[tuple[Tensor, ...]]:
        """Per level ``(scores (B, HWA, K), boxes (B, HWA, 4))`` of ``images: Tensor[B, 3, H, W]``."""
        x = np.ascontiguousarray(images.detach().cpu().numpy().astype(np.float32))
        outs = self.session.run(None, {"images": x})
        self._size = (int(images.shape[-2]), int(images.shape[-1]))  # default clip size
        self._batch = int(images.shape[0])
        if self.nms_in_graph:  # (boxes, scores, labels, batch_index) of the whole batch
            return [tuple(torch.from_numpy(o) for o in outs)]
        levels: list[tuple[Tensor, ...]] = [
            (torch.from_numpy(outs[2 * k]), torch.from_numpy(outs[2 * k + 1]))
            for k in range(self.levels)
        ]
        return levels

    def postprocess(
        self,
        outputs: list[tuple[Tensor, ...]],
        image_sizes: Sequence[Sequence[int]] | None = None,
    ) -> list[dict[str, Tensor]]:
        """:func:`select_detections` (or, with NMS in the graph, :func:`cap_detections`)."""
        if self.nms_in_graph:
            boxes, scores, labels, batch_index = outputs[0]
            return cap_detections(
                boxes,
                scores,
                labels,
                batch_index,
                self._batch,
                self.detections_per_img,
                image_sizes,
            )
        b = int(outputs[0][0].shape[0])
        sizes = [self._size] * b if image_sizes is None else image_sizes
        return select_detections(
            [(lv[0], lv[1]) for lv in outputs],
            sizes,
            self.score_thresh,
            self.topk_candidates,
            self.nms_thresh,
            self.detections_per_img,
        )

    def predict(
        self, images: Tensor, image_sizes: Sequence[Sequence[int]] | None = None
    ) -> list[dict[str, Tensor]]:
        """``postprocess(self(images))``."""
        return self.postprocess(self(images), image_sizes)


class OnnxClassifier:
    """An exported classifier run by onnxruntime: ``probabilities(images) -> (B, K)``."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.session = _session(path, threads)
        meta = _metadata(self.session, path)
        if meta["ssmd.kind"] != "classification":
            raise ValueError(f"{path}: field 'ssmd.kind' = {meta['ssmd.kind']!r}: not a classifier")
        self.config: dict[str, Any] = json.loads(meta["ssmd.config"])
        self.multi_label = bool(json.loads(meta["ssmd.multi_label"]))
        self.class_names: list[str] = json.loads(meta["ssmd.class_names"])

    training = False

    def eval(self) -> OnnxClassifier:
        return self

    def train(self, mode: bool = True) -> OnnxClassifier:
        if mode:
            raise ValueError("an ONNX classifier cannot be trained")
        return self

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits (B, K), probabilities (B, K))``."""
        x = np.ascontiguousarray(images.detach().cpu().numpy().astype(np.float32))
        logits, probs = self.session.run(None, {"images": x})
        return torch.from_numpy(logits), torch.from_numpy(probs)
