"""Scale policies (issue 25): under ``native`` a nucleus keeps its pixel size across image sizes."""

from __future__ import annotations

import pytest
import torch

from ssmd.data.transforms import Crop, RandomSpatialCrop
from ssmd.data.transforms.scale import scale_policy_transform
from ssmd.structures.sample import Sample


def _sample(size: tuple[int, int], box: list[float]) -> Sample:
    return Sample(
        torch.rand(3, *size), torch.tensor([box]), torch.tensor([1]), image_id=1, orig_size=size
    )


def _width(s: Sample) -> float:
    return float(s.boxes[0, 2] - s.boxes[0, 0])


def test_native_keeps_object_size_longer_side_does_not() -> None:
    small, big = _sample((256, 256), [10, 10, 20, 20]), _sample((1040, 1388), [10, 10, 20, 20])
    native = scale_policy_transform("native", input_size=384)
    assert _width(native(small)) == pytest.approx(10) and _width(native(big)) == pytest.approx(10)
    assert tuple(native(big).image.shape[-2:]) == (1152, 1408)  # padded to multiples of 128
    longer = scale_policy_transform("longer_side", input_size=384)
    assert _width(longer(small)) == pytest.approx(15.0)
    assert _width(longer(big)) == pytest.approx(10 * 384 / 1388)
    half = scale_policy_transform("native", input_size=384, scale=0.5)(big)
    assert _width(half) == pytest.approx(5) and half.scale == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"data\.scale_policy = 'bogus'"):
        scale_policy_transform("bogus", 384)


def test_training_crops_drop_boxes_by_visibility_and_replay_from_the_rng() -> None:
    """data.train_crop uses RandomSpatialCrop(min_visible=0.5): a box keeping less than half
    its area is dropped with its label, one mostly inside is clipped."""
    s = Sample(
        torch.arange(100.0).reshape(1, 10, 10),
        torch.tensor([[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 4.0, 3.0], [5.0, 5.0, 9.0, 9.0]]),
        torch.tensor([1, 2, 3]),
        image_id=1,
    )
    out = Crop([3, 3, 8, 8], min_visible=0.5)(s)
    assert out.image.shape == (1, 5, 5) and float(out.image[0, 0, 0]) == 33.0
    assert out.boxes.tolist() == [[0.0, 0.0, 3.0, 3.0], [2.0, 2.0, 5.0, 5.0]]
    assert out.labels.tolist() == [1, 3] and out.dropped_boxes == 1
    big = _sample((256, 384), [100, 100, 120, 120])
    torch.manual_seed(3)
    a = RandomSpatialCrop(256, min_visible=0.5)(big)
    torch.manual_seed(3)
    b = RandomSpatialCrop(256, min_visible=0.5)(big)
    assert a.image.shape == (3, 256, 256) and torch.equal(a.image, b.image)
    assert RandomSpatialCrop(512)(big).image.shape == (3, 256, 384)
