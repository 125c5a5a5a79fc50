"""Test-time ensemble: every scale x flip view maps back to the input pixels."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

from ssmd.models.tta import ensemble_predict


class BrightBox(nn.Module):
    """Detects the box of the pixels > 0.5 of channel 0 (score 0.9); records view sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def predict(
        self, images: Tensor, image_sizes: Sequence[Sequence[int]]
    ) -> list[dict[str, Tensor]]:
        out = []
        for img, (h, w) in zip(images, image_sizes, strict=True):
            self.sizes.append((int(h), int(w)))
            ys, xs = torch.nonzero(img[0, :h, :w] > 0.5, as_tuple=True)
            box = torch.tensor(
                [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32
            )
            out.append({"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])})
        return out


def test_views_map_back_and_merge_to_one_box() -> None:
    image = torch.zeros(3, 128, 128)
    image[:, 40:60, 10:30] = 1.0  # box (10, 40, 30, 60), off-centre so a wrong un-flip shows
    model = BrightBox()
    out = ensemble_predict(model, image, (100, 120), scales=(0.5, 1.0, 2.0), hflip=True)
    assert model.sizes == [(50, 60), (50, 60), (100, 120), (100, 120), (200, 240), (200, 240)]
    assert out["boxes"].shape == (1, 4)  # six copies merged by NMS
    assert torch.allclose(out["boxes"][0], torch.tensor([10.0, 40.0, 30.0, 60.0]), atol=1.0)
    assert float(out["scores"][0]) == pytest.approx(0.9)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scales"):
        ensemble_predict(BrightBox(), torch.zeros(3, 8, 8), scales=(0.0,))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        ensemble_predict(BrightBox(), torch.zeros(1, 3, 8, 8))
