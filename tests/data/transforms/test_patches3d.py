"""3D patch sampling and flips: boxes move with the voxels."""

from __future__ import annotations

import pytest
import torch

from ssmd.data.transforms.patches3d import RandomFlip3d, RandomPatch3d, crop_boxes_3d
from ssmd.structures.sample import Sample


def _sample(boxes: list[list[float]], size: tuple[int, int, int] = (20, 30, 40)) -> Sample:
    return Sample(
        image=torch.arange(size[0] * size[1] * size[2], dtype=torch.float32).reshape(1, *size),
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 6),
        labels=torch.ones(len(boxes), dtype=torch.int64),
        image_id=1,
        spatial_dims=3,
    )


def test_crop_boxes_hand_case() -> None:
    boxes = torch.tensor([[2.0, 2, 2, 6, 6, 6], [8.0, 0, 0, 12, 4, 4]])
    out, keep = crop_boxes_3d(boxes, (4, 0, 0), (6, 10, 10), min_visible=0.5)
    # box 0: x 2..6 -> -2..2 clipped 0..2: half visible -> kept; box 1: x 4..8 -> 4..6: half
    assert keep.tolist() == [True, True]
    assert out.tolist() == [[0.0, 2, 2, 2, 6, 6], [4.0, 0, 0, 6, 4, 4]]
    _, keep = crop_boxes_3d(boxes, (5, 0, 0), (6, 10, 10), min_visible=0.5)
    assert keep.tolist() == [False, True]  # box 0 only a quarter inside


def test_positive_patch_contains_the_nodule_and_voxels_match() -> None:
    s = _sample([[30.0, 20, 12, 34, 24, 16]])
    patch = RandomPatch3d((8, 16, 16), pos_fraction=1.0)
    for seed in range(5):
        torch.manual_seed(seed)
        out = patch(s)
        assert tuple(out.image.shape) == (1, 8, 16, 16)
        assert out.boxes.shape == (1, 6)
        # the voxel at the box corner is the same voxel of the volume
        x1, y1, z1 = (int(v) for v in out.boxes[0, :3])
        shift = s.boxes[0, :3] - out.boxes[0, :3]  # (x0, y0, z0) of the patch
        sx, sy, sz = (int(v) for v in shift)
        assert out.image[0, z1, y1, x1] == s.image[0, z1 + sz, y1 + sy, x1 + sx]


def test_negative_patches_drop_and_count_boxes_and_pad_small_volumes() -> None:
    s = _sample([[0.0, 0, 0, 4, 4, 4]], size=(6, 30, 40))
    torch.manual_seed(0)
    outs = [RandomPatch3d((16, 16, 16), pos_fraction=0.0)(s) for _ in range(20)]
    assert all(tuple(o.image.shape) == (1, 16, 16, 16) for o in outs)
    assert all(float(o.image[0, 6:].abs().sum()) == 0.0 for o in outs)  # padded z
    assert any(o.boxes.shape[0] == 0 and o.dropped_boxes == 1 for o in outs)
    with pytest.raises(ValueError, match="patch size"):
        RandomPatch3d((16, 16))


def test_flip_moves_boxes_with_voxels_and_twice_is_identity() -> None:
    s = _sample([[1.0, 2, 3, 5, 7, 9]])
    torch.manual_seed(0)
    out = RandomFlip3d(p=1.0)(s)
    assert out.boxes.tolist() == [[40.0 - 5, 30 - 7, 20 - 9, 40 - 1, 30 - 2, 20 - 3]]
    assert torch.equal(out.image, s.image.flip(1, 2, 3))
    back = RandomFlip3d(p=1.0)(out)
    assert torch.equal(back.image, s.image) and torch.equal(back.boxes, s.boxes)
    only_x = RandomFlip3d(p=1.0, axes=("x",))(s)
    assert only_x.boxes.tolist() == [[35.0, 2, 3, 39, 7, 9]]
    with pytest.raises(ValueError, match="3D"):
        RandomFlip3d()(Sample(torch.zeros(1, 4, 4), torch.zeros(0, 4), torch.zeros(0), 1))
