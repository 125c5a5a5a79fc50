"""DetectionDataset base: ids, lookups, labeled flags, views, validation of records."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from ssmd.data.datasets.base import DetectionDataset, ImageRecord, empty_annotation, make_records
from ssmd.utils.errors import DataError


class _Boxes(DetectionDataset):
    """Constant images with one box per image (box k at x = k)."""

    def __init__(self, n: int, **kw: object) -> None:
        records = make_records(Path("/r"), [f"f{k}.png" for k in range(n)], lambda _: (8, 4))
        super().__init__(records, [{"id": 3, "name": "a"}, {"id": 1, "name": "b"}], **kw)  # type: ignore[arg-type]

    def _annotation(self, i: int) -> tuple[Tensor, Tensor]:
        return torch.tensor([[float(i), 0.0, i + 1.0, 1.0]]), torch.tensor([1])

    def _load_image(self, i: int) -> Tensor:
        return torch.full((3, 4, 8), float(i))


def test_records_ids_lookup_and_labels() -> None:
    ds = _Boxes(3)
    assert [r.image_id for r in ds.records] == [1, 2, 3]
    assert ds.index_of("f2.png") == 2
    assert ds.label_to_category == {1: 3, 2: 1} and ds.num_classes == 2
    assert ds[-1].image_id == 3
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(DataError, match=r"'file_name' = 'g\.png'"):
        ds.index_of("g.png")


class _Plain(DetectionDataset):
    def _annotation(self, i: int) -> tuple[Tensor, Tensor]:
        return empty_annotation()


def test_duplicate_records_rejected() -> None:
    rec = ImageRecord(1, "a.png", 2, 2, Path("a.png"))
    with pytest.raises(DataError, match="duplicate image file name"):
        _Plain([rec, rec], [])
    rec2 = ImageRecord(1, "b.png", 2, 2, Path("b.png"))
    with pytest.raises(DataError, match="duplicate image id"):
        _Plain([rec, rec2], [])
    with pytest.raises(TypeError, match="abstract"):
        DetectionDataset([rec], [])  # type: ignore[abstract]


def test_labeled_flags_and_views() -> None:
    ds = _Boxes(4, labeled=[True, False, True, True])
    assert ds[1].is_labeled is False
    assert ds[1].boxes.tolist() == [[1.0, 0.0, 2.0, 1.0]]  # unlabeled keeps its GT
    ds.set_labeled(1, True)
    assert ds.is_labeled(1)
    view = ds.subset([3, 0], labeled=[False, True])
    assert [r.image_id for r in view.records] == [4, 1]
    assert view[0].is_labeled is False and float(view[0].image[0, 0, 0]) == 3.0
    assert view.annotation(0)[0].tolist() == [[3.0, 0.0, 4.0, 1.0]]
    assert view.parent_indices == [3, 0]
    with pytest.raises(ValueError, match="repeats"):
        ds.subset([1, 1])
    with pytest.raises(ValueError, match="labeled has 1 flags"):
        _Boxes(2, labeled=[True])


def test_annotation_returns_copies() -> None:
    ds = _Boxes(1)
    b, _ = ds.annotation(0)
    b += 100
    assert ds.annotation(0)[0].tolist() == [[0.0, 0.0, 1.0, 1.0]]
