"""Scale policies (issue 25): under ``native`` a nucleus keeps its pixel size across image sizes."""

from __future__ import annotations

import pytest
import torch

from ssmd.data.transforms.scale import RandomCrop, crop, scale_policy_transform
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


def test_crop_moves_clips_and_drops_boxes_by_visibility() -> None:
    s = Sample(
        torch.arange(100.0).reshape(1, 10, 10),
        torch.tensor([[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 4.0, 3.0], [5.0, 5.0, 9.0, 9.0]]),
        torch.tensor([1, 2, 3]),
        image_id=1,
    )
    out = crop(s, x0=3, y0=3, width=5, height=5, min_visible=0.5)
    assert out.image.shape == (1, 5, 5) and float(out.image[0, 0, 0]) == 33.0
    # box 1: 3x3 of 4x4 visible (0.56) -> kept, clipped; box 2: outside -> dropped;
    # box 3: 3x3 of 4x4 visible -> kept, clipped
    assert out.boxes.tolist() == [[0.0, 0.0, 3.0, 3.0], [2.0, 2.0, 5.0, 5.0]]
    assert out.labels.tolist() == [1, 3] and out.dropped_boxes == 1
    strict = crop(s, x0=3, y0=3, width=5, height=5, min_visible=0.6)
    assert strict.labels.tolist() == [] and strict.dropped_boxes == 3


def test_random_crop_is_reproducible_from_the_rng_and_never_larger_than_the_image() -> None:
    s = _sample((256, 384), [100, 100, 120, 120])
    torch.manual_seed(3)
    a = RandomCrop(256)(s)
    torch.manual_seed(3)
    b = RandomCrop(256)(s)
    assert a.image.shape == (3, 256, 256) and torch.equal(a.image, b.image)
    assert RandomCrop(512)(s).image.shape == (3, 256, 384)
