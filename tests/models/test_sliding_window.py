"""Sliding-window detection over a volume: one detection per object, in volume voxels."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

from ssmd.models.sliding_window import sliding_window_detect


class BrightSpot(nn.Module):
    """Detects the brightest voxel of each patch as a 4-voxel cube (score = its value)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def predict(
        self, images: Tensor, image_sizes: Sequence[Sequence[int]]
    ) -> list[dict[str, Tensor]]:
        out = []
        for img, size in zip(images, image_sizes, strict=True):
            self.calls += 1
            d, h, w = size
            v = img[0, :d, :h, :w]
            flat = int(v.argmax())
            z, y, x = flat // (h * w), (flat // w) % h, flat % w
            c = torch.tensor([x + 0.5, y + 0.5, z + 0.5])
            out.append(
                {
                    "boxes": torch.cat([c - 2, c + 2])[None],
                    "scores": v.max()[None],
                    "labels": torch.ones(1, dtype=torch.int64),
                }
            )
        return out


def test_one_detection_per_object_in_volume_voxels() -> None:
    vol = torch.zeros(1, 40, 40, 56)
    vol[0, 20, 21, 30] = 1.0  # seen by several overlapping windows
    model = BrightSpot()
    det = sliding_window_detect(model, vol, patch_size=16, overlap=8, batch_size=3, nms_thresh=0.1)
    assert model.calls > 8
    # the real object once, plus one low-score spot (value 0) per window that does not see it
    top = det["boxes"][0].tolist()
    assert top == [28.5, 19.5, 18.5, 32.5, 23.5, 22.5]
    assert float(det["scores"][0]) == 1.0
    assert int((det["scores"] == 1.0).sum()) == 1


def test_bad_patch_size() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        sliding_window_detect(BrightSpot(), torch.zeros(1, 8, 8, 8), patch_size=20, overlap=4)
    with pytest.raises(ValueError, match="C, D, H, W"):
        sliding_window_detect(BrightSpot(), torch.zeros(8, 8, 8), patch_size=16, overlap=4)
