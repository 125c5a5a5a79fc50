"""Samples and batches carry spatial_dims: validation names the field, collate pads in N-D."""

from __future__ import annotations

import pytest
import torch

from ssmd.structures.sample import Sample, collate


def _volume_sample(d: int, h: int, w: int, image_id: int = 1) -> Sample:
    return Sample(
        torch.ones(1, d, h, w),
        torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]]),
        torch.tensor([1]),
        image_id=image_id,
        spatial_dims=3,
    )


def test_3d_sample_defaults_follow_spatial_dims() -> None:
    s = _volume_sample(2, 3, 4)
    assert s.orig_size == (2, 3, 4)
    assert s.spatial_size == (2, 3, 4)
    assert s.ignore.shape == (0, 6)  # the default empty ignore takes the 3D width
    two_d = Sample(torch.ones(3, 4, 5), torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long), 1)
    assert two_d.spatial_dims == 2 and two_d.orig_size == (4, 5) and two_d.ignore.shape == (0, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spatial_dims": 4}, r"Sample\.spatial_dims = 4"),
        # a 3D volume (C, D, H, W) is not a 2D image: the classic batch-or-volume confusion
        ({"image": torch.ones(1, 2, 3, 4), "spatial_dims": 2}, r"Sample\.image .*\(C, H, W\)"),
        ({"image": torch.ones(1, 3, 4)}, r"Sample\.image .*\(C, D, H, W\) for spatial_dims=3"),
        ({"boxes": torch.zeros(1, 4)}, r"Sample\.boxes has shape \(1, 4\), expected \(N, 6\)"),
        ({"labels": torch.tensor([1, 2])}, r"Sample\.labels .* one per box"),
        ({"ignore": torch.zeros(2, 4)}, r"Sample\.ignore has shape \(2, 4\)"),
        ({"orig_size": (3, 4)}, r"Sample\.orig_size = \(3, 4\): expected 3 sizes"),
        ({"axis_scale": (1.0, 2.0)}, r"Sample\.axis_scale"),
    ],
)
def test_sample_rejects_fields_that_do_not_fit_spatial_dims(kwargs: dict, match: str) -> None:
    fields = {
        "image": torch.ones(1, 2, 3, 4),
        "boxes": torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]]),
        "labels": torch.tensor([1]),
        "image_id": 7,
        "path": "vol.nii.gz",
        "spatial_dims": 3,
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=match) as err:
        Sample(**fields)  # type: ignore[arg-type]
    assert "vol.nii.gz" in str(err.value)  # the message names the sample


def test_replace_revalidates() -> None:
    s = _volume_sample(2, 3, 4)
    with pytest.raises(ValueError, match=r"Sample\.boxes"):
        s.replace(boxes=torch.zeros(1, 4), labels=torch.tensor([1]))


def test_collate_pads_every_axis_in_3d() -> None:
    s1 = _volume_sample(2, 3, 4, image_id=1)
    s2 = Sample(
        torch.full((1, 4, 2, 5), 2.0),
        torch.zeros((0, 6)),
        torch.zeros((0,), dtype=torch.long),
        image_id=2,
        spatial_dims=3,
        is_labeled=False,
    )
    batch = collate([s1, s2])
    assert batch.spatial_dims == 3
    assert batch.images.shape == (2, 1, 4, 3, 5)  # max D, H, W
    assert batch.image_sizes == [(2, 3, 4), (4, 2, 5)]
    # sample 1 keeps its 2*3*4 = 24 ones at the front corner, zeros elsewhere
    assert float(batch.images[0].sum()) == 24.0
    assert float(batch.images[0, :, :2, :3, :4].sum()) == 24.0
    # sample 2: 4*2*5 = 40 voxels of value 2, the padded row y = 2 is zero
    assert float(batch.images[1].sum()) == 80.0 and float(batch.images[1, :, :, 2].abs().sum()) == 0
    assert [b.shape[1] for b in batch.boxes] == [6, 6]
    assert batch.is_labeled.tolist() == [True, False]
    assert batch.orig_sizes == [(2, 3, 4), (4, 2, 5)]


def test_collate_refuses_mixed_spatial_dims() -> None:
    s2d = Sample(torch.ones(1, 3, 4), torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="different spatial_dims 1: 2, 9: 3"):
        collate([s2d, _volume_sample(2, 3, 4, image_id=9)])


def test_original_boxes_with_isotropic_and_per_axis_scale() -> None:
    boxes = torch.tensor([[4.0, 6.0, 8.0, 10.0, 12.0, 16.0]])
    s = _volume_sample(2, 3, 4).replace(scale=2.0, axis_scale=(1.0, 1.5, 4.0))
    # per axis x, y, z: 2 * (1, 1.5, 4) = (2, 3, 8)
    assert s.box_scale().tolist() == [2.0, 3.0, 8.0, 2.0, 3.0, 8.0]
    assert s.original_boxes(boxes).tolist() == [[2.0, 2.0, 1.0, 5.0, 4.0, 2.0]]
    iso = Sample(torch.ones(1, 4, 4), torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long), 1)
    iso = iso.replace(scale=0.5)
    assert iso.original_boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist() == [
        [2.0, 4.0, 6.0, 8.0]
    ]
