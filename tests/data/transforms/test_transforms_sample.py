"""Sample transforms: image, boxes and ignore regions move together; drops are counted."""

from __future__ import annotations

import pytest
import torch

from ssmd.data.transforms import (
    Compose,
    CTWindow,
    Cutout,
    HFlip,
    Normalize,
    RandomHFlip,
    RandomRotate,
    RandomVFlip,
    Resize,
    Rotate,
    VFlip,
)
from ssmd.structures.boxes import boxes_from_masks
from ssmd.structures.sample import Sample


def _sample(h: int = 16, w: int = 24) -> Sample:
    img = torch.zeros(3, h, w)
    img[:, 2:6, 3:9] = 1.0  # object 1: box [3, 2, 9, 6]
    img[:, 10:16, 20:24] = 0.5  # object 2: box [20, 10, 24, 16]
    return Sample(
        image=img,
        boxes=torch.tensor([[3.0, 2.0, 9.0, 6.0], [20.0, 10.0, 24.0, 16.0]]),
        labels=torch.tensor([1, 2]),
        image_id=5,
        ignore=torch.tensor([[0.0, 0.0, 2.0, 2.0]]),
    )


def test_hflip_moves_everything_and_twice_is_identity() -> None:
    s = _sample()
    f = HFlip()(s)
    assert f.boxes.tolist() == [[15.0, 2.0, 21.0, 6.0], [0.0, 10.0, 4.0, 16.0]]
    assert f.ignore.tolist() == [[22.0, 0.0, 24.0, 2.0]]
    assert torch.equal(boxes_from_masks((f.image[0] == 1.0)[None]), f.boxes[:1])
    ff = HFlip()(f)
    assert torch.equal(ff.image, s.image) and torch.equal(ff.boxes, s.boxes)
    assert torch.equal(ff.ignore, s.ignore) and ff.image_id == 5 and ff.dropped_boxes == 0
    assert torch.equal(s.boxes[0], torch.tensor([3.0, 2.0, 9.0, 6.0]))  # input untouched


def test_vflip_and_random_flips_follow_probability() -> None:
    s = _sample()
    assert VFlip()(s).boxes.tolist()[0] == [3.0, 10.0, 9.0, 14.0]
    assert torch.equal(RandomHFlip(0.0)(s).boxes, s.boxes)
    assert torch.equal(RandomHFlip(1.0)(s).boxes, HFlip()(s).boxes)
    assert torch.equal(RandomVFlip(1.0)(s).boxes, VFlip()(s).boxes)
    g = torch.Generator().manual_seed(0)
    flips = sum(int(RandomHFlip(0.5, generator=g)(s).boxes[0, 0] == 15.0) for _ in range(200))
    assert 70 < flips < 130
    with pytest.raises(ValueError, match=r"p = 1\.5"):
        RandomHFlip(1.5)


def test_rotate_90_drops_and_counts_boxes_leaving_the_image() -> None:
    # 16x24 canvas, centre (12, 8); CCW 90: x' = 12 + (y - 8), y' = 8 - (x - 12)
    s = _sample()
    r = Rotate(90)(s)
    # object 1 -> x 6..10, y 11..17 -> clipped to y 11..16; object 2 -> x 14..20, y -4..0 -> gone
    assert r.boxes.tolist() == [[6.0, 11.0, 10.0, 16.0]]
    assert r.labels.tolist() == [1]
    assert r.dropped_boxes == 1
    assert r.image.shape == s.image.shape


def test_random_rotate_zero_is_identity_and_range() -> None:
    s = _sample()
    r = RandomRotate(0.0)(s)
    assert torch.equal(r.image, s.image) and torch.equal(r.boxes, s.boxes)
    g = torch.Generator().manual_seed(1)
    rr = RandomRotate(10.0, generator=g)(s)
    assert rr.boxes.shape[0] == 2  # small rotations keep both boxes (clipped)
    assert not torch.equal(rr.boxes, s.boxes)


def test_resize_pads_scales_and_records_scale() -> None:
    s = _sample(100, 150)
    s.boxes = torch.tensor([[30.0, 20.0, 60.0, 80.0], [0.0, 0.0, 1.2, 1.2]])
    r = Resize(300, pad_to=128)(s)
    assert r.image.shape == (3, 256, 384)  # 200x300 padded
    assert r.scale == pytest.approx(2.0)
    assert r.boxes.tolist() == [
        [60.0, 40.0, 120.0, 160.0],
        [0.0, 0.0, 2.4000000953674316, 2.4000000953674316],
    ]
    assert r.orig_size == (100, 150)
    down = Resize(75, pad_to=1)(s)  # scale 0.5: the 1.2-px box becomes 0.6 px and is dropped
    assert down.image.shape == (3, 50, 75)
    assert down.boxes.shape == (1, 4) and down.dropped_boxes == 1
    assert Resize(75, pad_to=1)(down).dropped_boxes == 1  # counts accumulate, scale multiplies
    assert Resize(75, pad_to=1)(down).scale == pytest.approx(0.5)


def test_compose_cutout_normalize_ctwindow() -> None:
    s = _sample()
    t = Compose([HFlip(), Cutout(1, 3, value=-1.0, generator=torch.Generator().manual_seed(0))])
    out = t(s)
    assert int((out.image == -1.0).sum()) == 3 * 9 and torch.equal(out.boxes, HFlip()(s).boxes)
    n = Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])(s)
    assert float(n.image.min()) == -1.0 and float(n.image.max()) == 1.0
    hu = s.replace(image=torch.tensor([[[-1000.0, 400.0]]]))
    assert CTWindow(-1000, 400)(hu).image.tolist() == [[[-1.0, 1.0]]]
    with pytest.raises(TypeError):
        Compose([1])  # type: ignore[list-item]
