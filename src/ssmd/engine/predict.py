"""Batched prediction that maps boxes back to each image's original pixel grid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from ssmd.models.inferers import tiled_predict
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
    tile_size: int = 0,
    tile_overlap: int = 64,
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
        tile_size: images larger than this along either side are predicted tile by tile
            (:func:`ssmd.models.inferers.tiled_predict`; 0: always whole images).
        tile_overlap: overlap of neighbouring tiles (at least the largest object's size).

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
            large = [
                tile_size > 0 and max(int(s.image.shape[-2]), int(s.image.shape[-1])) > tile_size
                for s in drawn
            ]
            whole = [s for s, big in zip(drawn, large, strict=True) if not big]
            whole_dets: list[dict[str, Tensor]] = []
            if whole:
                batch = collate(whole)
                outputs = model(batch.images)
                whole_dets = cast(Any, model).postprocess(outputs, image_sizes=batch.image_sizes)
            pending = iter(whole_dets)
            detections = [
                tiled_predict(
                    model,
                    s.image,
                    tile_size,
                    tile_overlap,
                    batch_size=batch_size,
                    nms_thresh=float(getattr(model, "nms_thresh", 0.5)),
                    detections_per_img=int(getattr(model, "detections_per_img", 1000)),
                )
                if big
                else next(pending)
                for s, big in zip(drawn, large, strict=True)
            ]
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
