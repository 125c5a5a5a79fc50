"""AnchorGenerator: counts, hand-computed positions, (y, x, a) order, flip symmetry, cache."""

from __future__ import annotations

import math

import pytest
import torch

from ssmd.models.detectors.anchors import AnchorGenerator

NUCLEI_SIZES = (8, 16, 32, 64, 128)
SIZES_128 = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]


def test_counts_per_level_for_128_input() -> None:
    gen = AnchorGenerator(sizes=NUCLEI_SIZES)
    anchors = gen.anchors_for((128, 128), SIZES_128)
    assert gen.num_anchors_per_location == 9
    assert [a.shape for a in anchors] == [
        (16 * 16 * 9, 4),
        (8 * 8 * 9, 4),
        (4 * 4 * 9, 4),
        (2 * 2 * 9, 4),
        (1 * 1 * 9, 4),
    ]
    assert all(a.dtype == torch.float32 for a in anchors)


def test_hand_computed_positions_on_128_input() -> None:
    anchors = AnchorGenerator(sizes=NUCLEI_SIZES).anchors_for((128, 128), SIZES_128)
    # level 0 (stride 8, size 8), y=0 x=0, a=0: ratio h/w=0.5, scale 1 -> w=11.3137, h=5.6569 at (4, 4)
    torch.testing.assert_close(
        anchors[0][0], torch.tensor([-1.656854, 1.171573, 9.656854, 6.828427]), atol=1e-5, rtol=0
    )
    # level 0, y=1 x=2, a=4 (ratio 1, scale 2^(1/3)): flat (1*16+2)*9+4 = 166, centre (20, 12), side 10.0794
    torch.testing.assert_close(
        anchors[0][166],
        torch.tensor([14.960316, 6.960316, 25.039684, 17.039684]),
        atol=1e-5,
        rtol=0,
    )
    # level 4 (stride 128, size 128), the single cell, a=8 (ratio 2, scale 2^(2/3)), centre (64, 64)
    torch.testing.assert_close(
        anchors[4][8],
        torch.tensor([-7.837571, -79.675142, 135.837571, 207.675142]),
        atol=1e-4,
        rtol=0,
    )


def test_flat_order_is_y_x_a() -> None:
    gen = AnchorGenerator(sizes=NUCLEI_SIZES)
    anchors = gen.anchors_for((128, 128), SIZES_128)[1].view(8, 8, 9, 4)  # (H, W, A, 4)
    centres = (anchors[..., :2] + anchors[..., 2:]) / 2  # (H, W, A, 2) as (x, y)
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    assert torch.allclose(centres[..., 0], ((xs + 0.5) * 16)[..., None].expand(8, 8, 9))
    assert torch.allclose(centres[..., 1], ((ys + 0.5) * 16)[..., None].expand(8, 8, 9))
    sizes = anchors[0, 0, :, 2:] - anchors[0, 0, :, :2]  # (A, 2) as (w, h)
    # a = ratio_index * 3 + scale_index; ratio = h / w; area = (16 * scale)^2
    ratios = (sizes[:, 1] / sizes[:, 0]).view(3, 3)
    torch.testing.assert_close(ratios, torch.tensor([[0.5] * 3, [1.0] * 3, [2.0] * 3]))
    areas = (sizes[:, 0] * sizes[:, 1]).view(3, 3)
    expected = torch.tensor([(16 * 2 ** (i / 3)) ** 2 for i in range(3)]).expand(3, 3)
    torch.testing.assert_close(areas, expected, rtol=1e-5, atol=1e-3)


def _mirror(boxes: torch.Tensor, width: float) -> torch.Tensor:
    return torch.stack(
        [width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], -1
    )


def test_grid_is_mirror_symmetric_on_input_padded_to_128() -> None:
    gen = AnchorGenerator(sizes=(32, 64, 128, 256, 512))
    h, w = 256, 384
    sizes = [(h // s, w // s) for s in gen.strides]
    for level, (anchors, (hl, wl)) in enumerate(
        zip(gen.anchors_for((h, w), sizes), sizes, strict=True)
    ):
        grid = anchors.view(hl, wl, 9, 4)  # (H_l, W_l, A, 4)
        # anchor (l, a, y, x) mirrored about x = W/2 is anchor (l, a, y, W_l - 1 - x)
        torch.testing.assert_close(
            _mirror(grid, w), grid.flip(1), atol=1e-4, rtol=0, msg=f"level {level}"
        )


def test_mirror_symmetry_fails_when_not_padded() -> None:
    """Negative control: width 200 is not a multiple of 128, so the coarse levels are off-centre."""
    gen = AnchorGenerator(sizes=(32, 64, 128, 256, 512))
    w = 200
    sizes = [(25, 25), (13, 13), (7, 7), (4, 4), (2, 2)]  # ceil(200 / stride)
    grid = gen.anchors_for((200, w), sizes)[4].view(2, 2, 9, 4)
    assert not torch.allclose(_mirror(grid, w), grid.flip(1), atol=1e-3)


def test_cache_returns_same_tensors_and_is_keyed_by_size() -> None:
    gen = AnchorGenerator(sizes=NUCLEI_SIZES)
    a = gen.anchors_for((128, 128), SIZES_128)
    b = gen.anchors_for((128, 128), SIZES_128)
    assert all(x is y for x, y in zip(a, b, strict=True))
    c = gen.anchors_for((256, 256), [(2 * h, 2 * w) for h, w in SIZES_128])
    assert c[0].shape[0] == 4 * a[0].shape[0]


def test_3d_anchors_have_six_coordinates() -> None:
    gen = AnchorGenerator(sizes=(4, 8), strides=(4, 8), spatial_dims=3)
    anchors = gen.anchors_for((16, 16, 16), [(4, 4, 4), (2, 2, 2)])
    assert anchors[0].shape == (4 * 4 * 4 * 9, 6)
    first = anchors[0][4]  # (z, y, x) = (0, 0, 0), a=4: ratio 1, scale 2^(1/3), centre (2, 2, 2)
    half = 4 * 2 ** (1 / 3) / 2
    torch.testing.assert_close(
        first, torch.tensor([2 - half] * 3 + [2 + half] * 3), atol=1e-5, rtol=0
    )
    # flat order (z, y, x, a): the next x cell is 9 rows later
    torch.testing.assert_close(anchors[0][13] - anchors[0][4], torch.tensor([4.0, 0, 0, 4, 0, 0]))


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="one size per level"):
        AnchorGenerator(sizes=(8, 16), strides=(8, 16, 32))
    with pytest.raises(ValueError, match="positive"):
        AnchorGenerator(aspect_ratios=(0.0, 1.0))
    gen = AnchorGenerator()
    with pytest.raises(ValueError, match="5 levels"):
        gen.anchors_for((128, 128), SIZES_128[:3])
    assert math.isclose(gen.scales[1], 2 ** (1 / 3))
