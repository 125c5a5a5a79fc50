"""2D and 3D transforms from one code path: hand-computed boxes that follow the bright voxels.

Every geometric case puts a bright cuboid (rectangle) in a dark volume (image), works its
new box out by hand, and checks it both against the transform's box and against the tight
box of the bright voxels after the transform (:func:`boxes_from_masks`).
"""

from __future__ import annotations

import pytest
import torch

from ssmd.data.transforms import (
    Crop,
    Cutout,
    Flip,
    HFlip,
    Normalize,
    RandomSpatialCrop,
    Resize,
    Rotate,
    Zoom,
)
from ssmd.data.transforms import functional as F
from ssmd.structures.boxes import boxes_from_masks
from ssmd.structures.sample import Sample


def _volume_with_box(d: int, h: int, w: int, box: list[int]) -> torch.Tensor:
    """(1, D, H, W) volume that is 1 inside the xyzxyz box, 0 elsewhere."""
    vol = torch.zeros(1, d, h, w)
    x1, y1, z1, x2, y2, z2 = box
    vol[0, z1:z2, y1:y2, x1:x2] = 1.0
    return vol


def _bright_box(image: torch.Tensor, spatial_dims: int, thr: float = 0.5) -> torch.Tensor:
    return boxes_from_masks(image[:1] > thr, spatial_dims=spatial_dims)[0]


def _sample3d(vol: torch.Tensor, boxes: list[list[float]], labels: list[int]) -> Sample:
    return Sample(
        vol,
        torch.tensor(boxes),
        torch.tensor(labels),
        image_id=3,
        spatial_dims=3,
        ignore=torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]]),
    )


# ---------------------------------------------------------------------------- flips
@pytest.mark.parametrize(
    ("axis", "want"),
    [
        ("x", [3.0, 2.0, 0.0, 5.0, 4.0, 1.0]),  # W = 6: x 1..3 -> 6-3..6-1
        ("y", [1.0, 1.0, 0.0, 3.0, 3.0, 1.0]),  # H = 5: y 2..4 -> 1..3
        ("z", [1.0, 2.0, 3.0, 3.0, 4.0, 4.0]),  # D = 4: z 0..1 -> 3..4
    ],
)
def test_3d_flip_along_each_axis_hand_computed(axis: str, want: list[float]) -> None:
    box = [1, 2, 0, 3, 4, 1]
    vol = _volume_with_box(4, 5, 6, box)
    out, b = F.flip(vol, torch.tensor([box], dtype=torch.float32), axis)
    assert b.tolist() == [want]
    assert _bright_box(out, 3).tolist() == want
    back, b2 = F.flip(out, b, axis)
    assert torch.equal(back, vol) and b2.tolist() == [[float(v) for v in box]]


def test_flip_sample_3d_moves_boxes_ignore_and_keeps_labels() -> None:
    s = _sample3d(_volume_with_box(4, 5, 6, [1, 2, 0, 3, 4, 1]), [[1, 2, 0, 3, 4, 1]], [2])
    f = Flip("z")(s)
    assert f.boxes.tolist() == [[1.0, 2.0, 3.0, 3.0, 4.0, 4.0]]
    assert f.ignore.tolist() == [[0.0, 0.0, 3.0, 1.0, 1.0, 4.0]]
    assert f.labels.tolist() == [2] and f.spatial_dims == 3
    h = HFlip()(s)  # the 2D left-right flip is the x flip of a volume too
    assert torch.equal(h.image, s.image.flip(-1))
    assert h.boxes.tolist() == [[3.0, 2.0, 0.0, 5.0, 4.0, 1.0]]


def test_flip_batch_of_volumes_takes_a_list_of_boxes() -> None:
    vols = torch.stack([_volume_with_box(4, 5, 6, [1, 2, 0, 3, 4, 1])] * 2)  # (B, C, D, H, W)
    box = torch.tensor([[1.0, 2.0, 0.0, 3.0, 4.0, 1.0]])
    out, boxes = F.flip(vols, [box, torch.zeros(0, 6)], "z")
    assert out.shape == vols.shape and boxes[0].tolist() == [[1.0, 2.0, 3.0, 3.0, 4.0, 4.0]]
    assert boxes[1].shape == (0, 6)


# ---------------------------------------------------------------------------- rotations
@pytest.mark.parametrize(
    ("axis", "want"),
    [
        # centre (4, 4, 4); CCW 90 in the plane (u, v): u' = 4 + (v - 4), v' = 4 - (u - 4)
        ("z", [2.0, 5.0, 0.0, 5.0, 7.0, 6.0]),  # (u, v) = (x, y): x' = y, y' = 8 - x
        ("x", [1.0, 0.0, 3.0, 3.0, 6.0, 6.0]),  # (u, v) = (y, z): y' = z, z' = 8 - y
        ("y", [2.0, 2.0, 1.0, 8.0, 5.0, 3.0]),  # (u, v) = (z, x): z' = x, x' = 8 - z
    ],
)
def test_3d_rotate_90_about_each_axis_hand_computed(axis: str, want: list[float]) -> None:
    box = [1, 2, 0, 3, 5, 6]
    vol = _volume_with_box(8, 8, 8, box)
    out, b = F.rotate(vol, torch.tensor([box], dtype=torch.float32), 90.0, axis=axis)
    assert b.tolist() == [want]
    assert _bright_box(out, 3).tolist() == want
    assert float(out.sum()) == float(vol.sum())  # an exact voxel permutation


def test_3d_rotate_about_z_is_the_2d_rotation_of_every_slice() -> None:
    g = torch.Generator().manual_seed(0)
    vol = torch.rand(2, 5, 12, 16, generator=g)  # (C, D, H, W), non-square slices
    boxes3 = torch.tensor([[2.0, 3.0, 1.0, 9.0, 8.0, 4.0]])
    out, b3 = F.rotate(vol, boxes3, 23.0, fill=0.5, axis="z")
    for z in range(5):
        want, b2 = F.rotate(vol[:, z], boxes3[:, [0, 1, 3, 4]], 23.0, fill=0.5)
        assert torch.equal(out[:, z], want)
    assert torch.equal(b3[:, [0, 1, 3, 4]], b2) and b3[0, [2, 5]].tolist() == [1.0, 4.0]


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_3d_rotate_30_box_encloses_the_bright_region(axis: str) -> None:
    box = [6, 7, 8, 12, 13, 14]  # a 6-voxel cube in the middle of a 20^3 volume
    vol = _volume_with_box(20, 20, 20, box)
    out, b = F.rotate(vol, torch.tensor([box], dtype=torch.float32), 30.0, axis=axis)
    bright = _bright_box(out, 3)
    # the box of the rotated corners matches the bright voxels to within one voxel
    torch.testing.assert_close(bright, b[0], atol=1.0, rtol=0.0)
    k = "xyz".index(axis)  # the rotation axis keeps its extent exactly
    assert b[0, [k, k + 3]].tolist() == [float(box[k]), float(box[k + 3])]
    assert float(b[0, 3 + (k + 1) % 3] - b[0, (k + 1) % 3]) > 6.0  # it grew in the plane


def test_3d_rotate_180_non_square_plane_is_exact() -> None:
    box = [1, 2, 0, 3, 4, 2]
    vol = _volume_with_box(6, 5, 4, box)  # (D, H, W) = (6, 5, 4)
    out, b = F.rotate(vol, torch.tensor([box], dtype=torch.float32), 180.0, axis="x")
    # about x: y' = H - y, z' = D - z
    assert b.tolist() == [[1.0, 1.0, 4.0, 3.0, 3.0, 6.0]]
    assert _bright_box(out, 3).tolist() == b[0].tolist()


def test_rotate_sample_3d_moves_boxes_and_ignore() -> None:
    # 8 x 8 x 12 (D, H, W) about x: the plane (y, z) is 8 x 8, centre (4, 4)
    vol = _volume_with_box(8, 8, 12, [0, 0, 0, 2, 2, 2])
    s = _sample3d(vol, [[0, 0, 0, 2, 2, 2], [5, 1, 1, 7, 3, 3]], [1, 2])
    r = Rotate(90, axis="x")(s)
    # y' = z, z' = 8 - y: box 1 -> y 0..2, z 6..8; box 2 -> y 1..3, z 5..7
    assert r.boxes.tolist() == [[0.0, 0.0, 6.0, 2.0, 2.0, 8.0], [5.0, 1.0, 5.0, 7.0, 3.0, 7.0]]
    assert r.ignore.tolist() == [[0.0, 0.0, 7.0, 1.0, 1.0, 8.0]]
    assert r.labels.tolist() == [1, 2]
    assert _bright_box(r.image, 3).tolist() == r.boxes[0].tolist()


def test_rotate_sample_3d_drops_boxes_rotated_out_and_counts_them() -> None:
    # about y the plane is (z, x) = 8 x 12 (not square), centre (z, x) = (4, 6);
    # CCW 90: z' = 4 + (x - 6) = x - 2, x' = 6 - (z - 4) = 10 - z
    vol = _volume_with_box(8, 8, 12, [6, 1, 3, 8, 3, 5])
    s = _sample3d(vol, [[0, 0, 0, 1, 2, 2], [6, 1, 3, 8, 3, 5]], [1, 2])
    r = Rotate(90, axis="y")(s)
    # box 1: z' = -2..-1, outside the volume -> dropped with its label; box 2: z 4..6, x 5..7
    assert r.boxes.tolist() == [[5.0, 1.0, 4.0, 7.0, 3.0, 6.0]]
    assert r.labels.tolist() == [2] and r.dropped_boxes == 1
    assert r.image.shape == s.image.shape
    assert _bright_box(r.image, 3).tolist() == r.boxes[0].tolist()


def test_rotation_axis_errors() -> None:
    img = torch.zeros(1, 8, 8)
    with pytest.raises(ValueError, match=r"2D rotation turns the \(x, y\) plane"):
        F.rotate(img, torch.zeros(0, 4), 30.0, axis="x")
    with pytest.raises(ValueError, match="axis = 'w'"):
        Rotate(10.0, axis="w")
    s2d = Sample(img, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 1)
    with pytest.raises(ValueError, match=r"axis = 'z': expected one of \('x', 'y'\)"):
        Flip("z")(s2d)


# ---------------------------------------------------------------------------- crops
def test_crop_3d_hand_computed_with_visibility_and_labels() -> None:
    vol = torch.arange(6 * 10 * 12, dtype=torch.float32).view(1, 6, 10, 12)
    s = _sample3d(vol, [[2, 3, 1, 6, 7, 4], [9, 0, 0, 12, 2, 6]], [1, 2])
    region = [4, 2, 0, 12, 10, 5]  # x 4..12, y 2..10, z 0..5
    c = Crop(region)(s)
    assert c.image.shape == (1, 5, 8, 8)
    assert torch.equal(c.image, vol[:, 0:5, 2:10, 4:12])
    # box 1 -> (-2, 1, 1, 2, 5, 4) clipped to (0, 1, 1, 2, 5, 4): 24 of its 48 voxels left;
    # box 2 -> y 0..0 inside the window: nothing left, dropped with its label
    assert c.boxes.tolist() == [[0.0, 1.0, 1.0, 2.0, 5.0, 4.0]]
    assert c.labels.tolist() == [1] and c.dropped_boxes == 1
    strict = Crop(region, min_visible=0.6)(s)  # half of box 1 is less than 0.6: dropped too
    assert strict.boxes.shape == (0, 6) and strict.labels.shape == (0,)
    assert strict.dropped_boxes == 2
    assert Crop(region, min_visible=0.5)(s).labels.tolist() == [1]  # exactly half is kept
    c.image[0, 0, 0, 0] = -1.0
    assert float(s.image[0, 0, 2, 4]) != -1.0  # the crop is a copy, the input untouched


def test_crop_2d_hand_computed_and_bright_box() -> None:
    img = torch.zeros(1, 10, 12)
    img[0, 3:7, 2:6] = 1.0  # box x 2..6, y 3..7
    s = Sample(img, torch.tensor([[2.0, 3.0, 6.0, 7.0]]), torch.tensor([4]), image_id=1)
    c = Crop([3, 1, 11, 9])(s)
    assert c.boxes.tolist() == [[0.0, 2.0, 3.0, 6.0]]
    assert _bright_box(c.image, 2).tolist() == [0.0, 2.0, 3.0, 6.0]
    with pytest.raises(ValueError, match=r"along x need 0 <= 3 < 13 <= 12"):
        Crop([3, 1, 13, 9])(s)
    with pytest.raises(ValueError, match="expected 4 integers"):
        Crop([0, 0, 0, 4, 4, 4])(s)


def test_random_spatial_crop_3d_keeps_boxes_on_the_bright_voxels() -> None:
    vol = _volume_with_box(12, 16, 20, [8, 6, 4, 11, 9, 7])
    s = _sample3d(vol, [[8, 6, 4, 11, 9, 7]], [1])
    g = torch.Generator().manual_seed(0)
    t = RandomSpatialCrop((10, 12, 8), generator=g)  # x, y, z sides
    clipped = 0
    for _ in range(20):
        c = t(s)
        assert c.image.shape == (1, 8, 12, 10)
        # every window overlaps the cube (x 8..11 in [lo, lo + 10) for lo in 0..10, etc.)
        assert c.boxes.shape == (1, 6) and c.dropped_boxes == 0
        assert _bright_box(c.image, 3).tolist() == c.boxes[0].tolist()
        clipped += int(bool((c.boxes[0, 3:] - c.boxes[0, :3] < 3).any()))
    assert 0 < clipped < 20  # some windows cut the cube, some hold all of it
    whole = RandomSpatialCrop(64)(s)  # larger than the volume: the whole axis
    assert torch.equal(whole.image, s.image) and torch.equal(whole.boxes, s.boxes)


# ---------------------------------------------------------------------------- cutout
def test_cutout_3d_exact_cuboids_per_axis_size() -> None:
    g = torch.Generator().manual_seed(0)
    vols = torch.ones(3, 2, 10, 12, 14)  # (B, C, D, H, W)
    out = F.cutout(vols, n=1, size=(5, 4, 3), generator=g, spatial_dims=3)  # x, y, z sides
    zero = out == 0
    assert [int(zero[i, 0].sum()) for i in range(3)] == [60] * 3
    assert torch.equal(zero[:, 0], zero[:, 1])  # all channels
    for i in range(3):
        b = boxes_from_masks(zero[i, :1], spatial_dims=3)[0]
        assert (b[3:] - b[:3]).tolist() == [5.0, 4.0, 3.0]
    one = F.cutout(torch.ones(1, 6, 6, 6), 2, 2, value=-1.0, spatial_dims=3)  # one volume
    assert one.shape == (1, 6, 6, 6) and set(one.unique().tolist()) == {-1.0, 1.0}
    with pytest.raises(ValueError, match=r"cutout n=1, size=\(5, 4, 11\)"):
        F.cutout(vols, n=1, size=(5, 4, 11), spatial_dims=3)


def test_cutout_sample_3d_and_regions_mask() -> None:
    s = _sample3d(torch.ones(1, 4, 5, 6), [[0, 0, 0, 1, 1, 1]], [1])
    out = Cutout(1, 2, generator=torch.Generator().manual_seed(3))(s)
    assert int((out.image == 0).sum()) == 8 and torch.equal(out.boxes, s.boxes)
    regions = torch.tensor([[[1, 0, 2, 3, 2, 4]]])  # x 1..3, y 0..2, z 2..4
    mask = F.regions_mask(regions, (4, 5, 6))
    assert mask.shape == (1, 4, 5, 6) and int(mask.sum()) == 8
    assert bool(mask[0, 2:4, 0:2, 1:3].all())


def test_visible_fraction_3d_hand_computed_and_brute_force() -> None:
    erased = torch.zeros(4, 4, 4, dtype=torch.bool)  # (D, H, W)
    erased[0:2, 0:2, 0:2] = True  # the 8 voxels with x, y, z < 2
    boxes = torch.tensor(
        [
            [0.0, 0.0, 0.0, 4.0, 4.0, 4.0],  # 8 of 64 erased -> 0.875
            [0.0, 0.0, 0.0, 2.0, 2.0, 4.0],  # 8 of 16 -> 0.5
            [1.5, 0.0, 0.0, 3.0, 1.0, 1.0],  # rounded out to x 1..3: 1 of 2 -> 0.5
            [3.0, 3.0, 3.0, 3.0, 3.0, 3.0],  # no voxel inside -> 1
        ]
    )
    frac = F.visible_fraction(boxes, erased)
    assert frac.tolist() == [0.875, 0.5, 0.5, 1.0]
    g = torch.Generator().manual_seed(0)
    rnd = torch.rand(5, 6, 7, generator=g) > 0.6
    lo = torch.randint(0, 4, (10, 3), generator=g).float()
    bx = torch.cat([lo, lo + torch.randint(1, 4, (10, 3), generator=g)], dim=1)
    want = []
    for x1, y1, z1, x2, y2, z2 in bx.long().tolist():
        block = rnd[z1:z2, y1:y2, x1:x2]
        want.append(1.0 - float(block.sum()) / block.numel())
    torch.testing.assert_close(F.visible_fraction(bx, rnd), torch.tensor(want))


# ---------------------------------------------------------------------------- resize
def test_resize_3d_longest_side_pads_and_scales_boxes() -> None:
    vol = torch.rand(1, 10, 20, 40)
    s = _sample3d(vol, [[4, 2, 2, 20, 10, 6]], [1])
    r = Resize(20, pad_to=8)(s)
    assert r.image.shape == (1, 8, 16, 24)  # (5, 10, 20) padded at the end of every axis
    assert r.scale == pytest.approx(0.5)
    assert r.boxes.tolist() == [[2.0, 1.0, 1.0, 10.0, 5.0, 3.0]]
    assert float(r.image[:, 5:].abs().sum()) == 0.0 and float(r.image[..., 20:].abs().sum()) == 0


def test_zoom_per_axis_records_axis_scale_and_maps_back() -> None:
    vol = _volume_with_box(4, 6, 8, [2, 2, 1, 6, 4, 3])
    s = _sample3d(vol, [[2, 2, 1, 6, 4, 3]], [1])
    z = Zoom((0.5, 1.0, 2.0))(s)  # x halves, z doubles
    assert z.image.shape == (1, 8, 6, 4)
    assert z.boxes.tolist() == [[1.0, 2.0, 2.0, 3.0, 4.0, 6.0]]
    assert z.axis_scale == (0.5, 1.0, 2.0) and z.scale == 1.0
    assert z.original_boxes(z.boxes).tolist() == s.boxes.tolist()
    iso = Zoom(2.0)(s)
    assert iso.scale == 2.0 and iso.axis_scale is None and iso.image.shape == (1, 8, 12, 16)
    with pytest.raises(ValueError, match="Zoom scale"):
        Zoom((1.0, 0.0))


# ---------------------------------------------------------------------------- errors / misc
def test_one_image_or_batch_is_told_by_the_boxes_not_ndim() -> None:
    vol = torch.zeros(1, 4, 5, 6)  # a volume (C, D, H, W) has the ndim of a 2D batch
    with pytest.raises(ValueError, match=r"one image \(C, H, W\) goes with a Tensor\[N, 4\]"):
        F.hflip(vol, torch.zeros(0, 4))  # 2D boxes for a 4-D tensor
    with pytest.raises(ValueError, match="spatial_dims = 2 but boxes have 6"):
        F.hflip(vol, torch.zeros(0, 6), spatial_dims=2)
    with pytest.raises(ValueError, match="one per image"):
        F.hflip(vol, [torch.zeros(0, 6)])  # a list says batch: (B, C, D, H, W) needed
    out, _ = F.hflip(vol, torch.zeros(0, 6))  # 6-wide boxes: one volume
    assert out.shape == vol.shape
    with pytest.raises(ValueError, match="mix 2D and 3D"):
        F.hflip(torch.zeros(2, 1, 4, 4), [torch.zeros(0, 4), torch.zeros(0, 6)])


def test_normalize_and_pad_3d() -> None:
    vol = torch.ones(2, 3, 4, 5)
    s = _sample3d(vol, [[0, 0, 0, 1, 1, 1]], [1])
    n = Normalize([0.5, 1.0], [0.25, 2.0])(s)
    assert n.image[:, 0, 0, 0].tolist() == [2.0, 0.0]
    assert F.pad_to_multiple(vol, 4, spatial_dims=3).shape == (2, 4, 4, 8)
    with pytest.raises(ValueError, match=r"images must be \(C, D, H, W\)"):
        F.pad_to_multiple(torch.ones(3, 4, 5), 4, spatial_dims=3)
