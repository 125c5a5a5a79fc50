"""Matcher on hand-made IoU matrices: foreground, background, ignore, low-quality, empty."""

from __future__ import annotations

import pytest
import torch

from ssmd.models.detectors.matcher import BACKGROUND, IGNORE, Matcher, match_quality
from ssmd.structures.boxes import box_iou

IOU = torch.tensor(
    [
        # a0   a1    a2    a3    a4   a5   a6
        [0.60, 0.45, 0.10, 0.00, 0.0, 0.2, 0.00],  # g0
        [0.10, 0.55, 0.35, 0.25, 0.0, 0.2, 0.42],  # g1
        [0.00, 0.00, 0.10, 0.30, 0.0, 0.3, 0.00],  # g2: best 0.3, tied at a3 and a5
    ]
)


def test_thresholds_without_low_quality() -> None:
    got = Matcher(0.5, 0.4, allow_low_quality_matches=False)(IOU)
    assert got.tolist() == [0, 1, BACKGROUND, BACKGROUND, BACKGROUND, BACKGROUND, IGNORE]
    assert got.dtype == torch.int64


def test_low_quality_matches_include_ties() -> None:
    got = Matcher(0.5, 0.4, allow_low_quality_matches=True)(IOU)
    # g2 never reaches 0.5; its best anchors a3 and a5 (a tie) become foreground for g2.
    assert got.tolist() == [0, 1, BACKGROUND, 2, BACKGROUND, 2, IGNORE]


def test_low_quality_anchor_goes_to_its_own_best_gt() -> None:
    """torchvision's rule: a claimed anchor is matched to the GT it overlaps most."""
    # g0's best anchor is a0 (0.30), but a0 overlaps g1 more (0.35); g1's own best is a1.
    iou = torch.tensor([[0.30, 0.0, 0.0], [0.35, 0.38, 0.0]])
    assert Matcher()(iou).tolist() == [1, 1, BACKGROUND]


def test_gt_without_any_overlap_claims_nothing() -> None:
    iou = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.7, 0.0]])
    assert Matcher()(iou).tolist() == [BACKGROUND, 1, BACKGROUND]


def test_empty_ground_truth_is_all_background() -> None:
    got = Matcher()(torch.zeros(0, 5))
    assert got.tolist() == [BACKGROUND] * 5


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="bg_iou_thresh <= fg_iou_thresh"):
        Matcher(0.4, 0.5)
    with pytest.raises(ValueError, match="IoU matrix"):
        Matcher()(torch.zeros(3))


def _boxes(n: int, seed: int, lo: float = 4.0, hi: float = 60.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(n, 2, generator=g) * (hi - lo) + lo
    xy = torch.rand(n, 2, generator=g) * 200
    return torch.cat([xy, xy + wh], dim=1)


def test_match_quality_equals_box_iou() -> None:
    gt, anchors = _boxes(30, 1), _boxes(500, 2)
    torch.testing.assert_close(match_quality(gt, anchors), box_iou(gt, anchors))


@pytest.mark.parametrize("low_quality", [True, False])
@pytest.mark.parametrize("num_gt", [0, 1, 7, 300])
def test_streamed_matching_equals_dense(low_quality: bool, num_gt: int) -> None:
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=low_quality)
    anchors = _boxes(5000, 3, lo=8.0, hi=40.0)
    gt = _boxes(num_gt, 4)
    if num_gt >= 7:
        gt[5] = anchors[4321]  # an exact tie partner: two anchors with the same best IoU
        anchors[17] = anchors[4321]
        gt[6] = torch.tensor([1000.0, 1000.0, 1010.0, 1010.0])  # overlaps no anchor
    dense = matcher(match_quality(gt, anchors))
    streamed = matcher.match_boxes(gt, anchors, chunk_elements=2048)  # many small chunks
    assert torch.equal(streamed, dense)
    if num_gt >= 7 and low_quality:
        assert streamed[17] == 5 and streamed[4321] == 5
