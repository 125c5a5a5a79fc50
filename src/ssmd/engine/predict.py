"""Batched prediction that maps boxes back to each image's original pixel grid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from ssmd.structures.boxes import clip_boxes
from ssmd.structures.sample import Sample, collate

__all__ = ["predict_samples"]


@torch.no_grad()
def predict_samples(
    model: nn.Module,
    samples: Any,
    indices: Sequence[int],
    batch_size: int = 4,
    normalize: Callable[[Sample], Sample] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run ``model`` over ``samples[i]`` for ``i`` in ``indices``.

    Args:
        model: a detector with ``forward(images) -> dense outputs`` and
            ``postprocess(outputs, image_sizes) -> list[dict(boxes, scores, labels)]``.
        samples: indexable source of prepared (resized, padded) samples.
        indices: which samples to predict.
        batch_size: images per forward pass.
        normalize: intensity normalisation applied before the forward pass.
        progress: show a progress bar with ETA.

    Returns:
        One dict per image: ``image_id``, ``boxes`` ``Tensor[N, 4]`` ``xyxy`` in the
        ORIGINAL image's pixels (divided by ``Sample.scale`` and clipped to
        ``orig_size``), ``scores``, ``labels`` (``1..K``).
    """
    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    order = list(indices)
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    iterator: Any = chunks
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(chunks, desc="predict", unit="batch", dynamic_ncols=True, mininterval=1.0)
    try:
        for chunk in iterator:
            drawn = [samples[i] for i in chunk]
            if normalize is not None:
                drawn = [normalize(s) for s in drawn]
            batch = collate(drawn)
            outputs = model(batch.images)
            detections: list[dict[str, Tensor]] = cast(Any, model).postprocess(
                outputs, image_sizes=batch.image_sizes
            )
            for det, sample in zip(detections, drawn, strict=True):
                boxes = clip_boxes(det["boxes"] / sample.scale, sample.orig_size)
                results.append(
                    {
                        "image_id": sample.image_id,
                        "boxes": boxes,
                        "scores": det["scores"],
                        "labels": det["labels"],
                    }
                )
    finally:
        model.train(was_training)
    return results
