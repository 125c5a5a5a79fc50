"""Tiled inference: tiles cover the image, and an object across a tile border is found once."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor, nn

from ssmd.models.inferers import tile_starts, tiled_predict
from ssmd.models.predict import predict_samples
from ssmd.structures.sample import Sample


class BrightBoxes(nn.Module):
    """A stand-in detector: one box per bright column band / row band of each image it sees
    (the bounding box of the pixels > 0.5, if any), score = the fraction of the image it fills."""

    nms_thresh = 0.5
    detections_per_img = 100

    def predict(
        self, images: Tensor, image_sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        out = []
        for image, (h, w) in zip(images, image_sizes, strict=True):
            mask = image[0, :h, :w] > 0.5
            if not mask.any():
                out.append(
                    {
                        "boxes": torch.zeros((0, 4)),
                        "scores": torch.zeros(0),
                        "labels": torch.zeros(0, dtype=torch.int64),
                    }
                )
                continue
            ys, xs = torch.nonzero(mask, as_tuple=True)
            box = torch.tensor(
                [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32
            )
            out.append({"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])})
        return out

    def forward(self, images: Tensor) -> Tensor:
        return images

    def postprocess(
        self, outputs: Tensor, image_sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        return self.predict(outputs, image_sizes)


def test_tile_starts_cover_the_axis_with_the_overlap() -> None:
    assert tile_starts(200, 256, 64) == [0]
    assert tile_starts(512, 256, 64) == [0, 128, 256]
    starts = tile_starts(1040, 256, 64)
    assert starts[0] == 0 and starts[-1] + 256 == 1040
    assert all(b - a <= 256 - 64 for a, b in itertools.pairwise(starts))
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(512, 256, 256)


@pytest.mark.parametrize("x1", [100, 170, 230, 240])  # inside one tile, or across borders
def test_an_object_across_a_tile_border_is_found_once(x1: int) -> None:
    image = torch.zeros(1, 256, 512)
    image[:, 60:90, x1 : x1 + 40] = 1.0  # a 40 px object; tiles of 256 overlap by >= 64
    det = tiled_predict(BrightBoxes(), image, tile=256, overlap=64, pad_to=128)
    assert det["boxes"].shape == (1, 4)
    assert det["boxes"][0].tolist() == [x1, 60, x1 + 40, 90]


def test_predict_samples_tiles_only_the_large_images() -> None:
    small = torch.zeros(1, 128, 128)
    small[:, 10:20, 10:30] = 1.0
    large = torch.zeros(1, 256, 640)
    large[:, 100:120, 300:330] = 1.0
    samples = [
        Sample(small, torch.zeros((0, 4)), torch.zeros(0, dtype=torch.int64), image_id=1),
        Sample(large, torch.zeros((0, 4)), torch.zeros(0, dtype=torch.int64), image_id=2),
    ]
    preds = predict_samples(
        BrightBoxes(), samples, [0, 1], batch_size=2, tile_size=256, tile_overlap=64
    )
    assert preds[0]["boxes"].tolist() == [[10, 10, 30, 20]]
    assert preds[1]["boxes"].tolist() == [[300, 100, 330, 120]]


def test_predictions_do_not_depend_on_the_other_images_of_a_batch() -> None:
    """Zero padding to a larger neighbour must not reach GroupNorm: images are batched only
    with images of their own size, so each image gets what it gets alone."""
    from ssmd.models import build_retinanet

    torch.manual_seed(0)
    model = build_retinanet(
        backbone="resnet18",
        backbone_norm="gn",
        width_multiplier=0.25,
        fpn_channels=64,
        head_convs=1,
        head_norm="gn",
        num_classes=1,
        score_thresh=0.0,
        detections_per_img=20,
    )
    small, large = torch.rand(3, 128, 128), torch.rand(3, 256, 384)
    samples = [
        Sample(im, torch.zeros((0, 4)), torch.zeros(0, dtype=torch.int64), image_id=i + 1)
        for i, im in enumerate([small, large, small.flip(-1)])
    ]
    together = predict_samples(model, samples, [0, 1, 2], batch_size=3)
    alone = [predict_samples(model, samples, [i], batch_size=1)[0] for i in range(3)]
    assert [p["image_id"] for p in together] == [1, 2, 3]
    for a, b in zip(together, alone, strict=True):
        assert torch.allclose(a["scores"], b["scores"], atol=1e-5)
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3)
