"""Test-time ensemble over scales and horizontal flips (Data Distillation; the LP paper, Sec. 3.2).

Radosavovic et al.'s data distillation, and the LP paper's missing ground-truth mining after
it, predict an image under several transformations with one model and aggregate: here the
image is resized by each factor of ``scales`` (bilinear) and, with ``hflip``, also mirrored;
every prediction is mapped back to the input image's pixels (``x -> W - x`` for the mirror,
divided by the factor) and the union is reduced by class-wise NMS at ``nms_iou``. (The
papers do not fix the aggregation of boxes; the union + NMS is Data Distillation's choice for
boxes and keeps the best-scoring copy of each object.) Boxes are ``xyxy`` pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

__all__ = ["ensemble_predict"]


@torch.no_grad()
def ensemble_predict(
    model: nn.Module,
    image: Tensor,
    image_size: tuple[int, int] | None = None,
    scales: Sequence[float] = (0.8, 1.0, 1.2),
    hflip: bool = True,
    nms_iou: float = 0.5,
    pad_to: int = 128,
) -> dict[str, Tensor]:
    """Predict one normalised image under every scale x flip and merge (module docstring).

    Args:
        model: a detector with ``predict(images, image_sizes)`` (the detector contract).
        image: ``Tensor[C, H, W]`` normalised (may be padded).
        image_size: ``(h, w)`` of the content before padding (default ``(H, W)``).
        scales: resize factors.
        hflip: also predict the mirrored image.
        nms_iou: IoU of the final class-wise NMS.
        pad_to: each view is zero-padded to a multiple of this (the detector's stride).

    Returns:
        ``{"boxes": Tensor[M, 4] xyxy in image pixels, "scores": Tensor[M], "labels": Tensor[M]}``,
        best score first.
    """
    if image.ndim != 3:
        raise ValueError(f"ensemble_predict: image must be (C, H, W), got {tuple(image.shape)}")
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(f"ensemble_predict: scales = {list(scales)}: need positive factors")
    h, w = image_size if image_size is not None else (int(image.shape[1]), int(image.shape[2]))
    content = image[:, :h, :w]
    predict = cast(Any, model).predict
    boxes, scores, labels = [], [], []
    for s in scales:
        hs, ws = max(1, round(h * s)), max(1, round(w * s))
        view = (
            content
            if (hs, ws) == (h, w)
            else F.interpolate(content[None], size=(hs, ws), mode="bilinear", align_corners=False)[
                0
            ]
        )  # (C, hs, ws)
        for flip in (False, True) if hflip else (False,):
            x = view.flip(-1) if flip else view
            ph, pw = -(-hs // pad_to) * pad_to, -(-ws // pad_to) * pad_to
            x = F.pad(x, (0, pw - ws, 0, ph - hs))  # (C, ph, pw)
            out = predict(x[None], [(hs, ws)])[0]
            b = out["boxes"].clone()  # (N, 4) xyxy in the view
            if flip:
                b[:, [0, 2]] = ws - b[:, [2, 0]]
            b = b / b.new_tensor([ws / w, hs / h, ws / w, hs / h])
            boxes.append(b)
            scores.append(out["scores"])
            labels.append(out["labels"])
    bx, sc, lb = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    keep = batched_nms(bx, sc, lb, nms_iou)  # sorted by score
    return {"boxes": bx[keep], "scores": sc[keep], "labels": lb[keep]}
