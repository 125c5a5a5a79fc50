"""PNG overlays of predicted (and ground-truth) boxes, for a person to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = ["draw_overlay"]

PRED_COLOUR = (0, 255, 0)
GT_COLOUR = (255, 0, 255)


def draw_overlay(
    image: Tensor | np.ndarray,
    path: str | Path,
    pred_boxes: Tensor | None = None,
    pred_scores: Tensor | None = None,
    gt_boxes: Tensor | None = None,
    score_thresh: float = 0.3,
) -> Path:
    """Write ``image`` with boxes drawn on it as a PNG.

    Args:
        image: ``(3, H, W)`` float in ``[0, 1]`` (tensor) or ``(H, W, 3)`` uint8 array.
        path: output PNG.
        pred_boxes: ``Tensor[N, 4]`` ``xyxy`` pixels of ``image``, drawn green.
        pred_scores: scores of ``pred_boxes``; boxes below ``score_thresh`` are not drawn.
        gt_boxes: ``Tensor[M, 4]`` ground truth, drawn magenta (under the predictions).
        score_thresh: minimum score of a drawn prediction.
    """
    if isinstance(image, Tensor):
        arr = (
            (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255)
            .round()
            .astype(np.uint8)
        )  # (H, W, 3)
    else:
        arr = np.asarray(image, dtype=np.uint8)
    canvas = Image.fromarray(arr).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    if gt_boxes is not None:
        for box in gt_boxes.tolist():
            draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=GT_COLOUR, width=1)
    if pred_boxes is not None:
        scores = pred_scores.tolist() if pred_scores is not None else [1.0] * len(pred_boxes)
        for box, score in zip(pred_boxes.tolist(), scores, strict=True):
            if score >= score_thresh:
                draw.rectangle(
                    [box[0], box[1], box[2] - 1, box[3] - 1], outline=PRED_COLOUR, width=1
                )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out
