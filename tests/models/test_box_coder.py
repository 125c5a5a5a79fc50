"""BoxCoder: Eq. (3) by hand, round trips (2D, 3D, weights), clamp."""

from __future__ import annotations

import math

import pytest
import torch

from ssmd.models.detectors.box_coder import BoxCoder


def _random_boxes(n: int, d: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(n, d, generator=g) * 200
    size = torch.rand(n, d, generator=g) * 80 + 2
    return torch.cat([lo, lo + size], dim=1)


def test_encode_by_hand() -> None:
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size (10, 20)
    box = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), size (20, 20)
    expected = torch.tensor([[0.7, 0.2, math.log(2.0), 0.0]])
    torch.testing.assert_close(BoxCoder().encode(box, anchor), expected)
    weighted = BoxCoder((10.0, 10.0, 5.0, 5.0)).encode(box, anchor)
    torch.testing.assert_close(weighted, torch.tensor([[7.0, 2.0, 5 * math.log(2.0), 0.0]]))


@pytest.mark.parametrize(
    "weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 1.5)]
)
def test_round_trip_2d(weights: tuple[float, ...]) -> None:
    coder = BoxCoder(weights)
    boxes, anchors = _random_boxes(500, seed=1), _random_boxes(500, seed=2)
    deltas = coder.encode(boxes, anchors)
    torch.testing.assert_close(coder.decode(deltas, anchors), boxes, atol=1e-3, rtol=1e-5)


def test_round_trip_3d_and_broadcasting() -> None:
    coder = BoxCoder((1.0,) * 6)
    boxes = _random_boxes(60, d=3, seed=3).view(2, 30, 6)
    anchors = _random_boxes(30, d=3, seed=4)
    deltas = coder.encode(boxes, anchors[None])  # (2, 30, 6)
    assert deltas.shape == (2, 30, 6)
    torch.testing.assert_close(coder.decode(deltas, anchors[None]), boxes, atol=1e-3, rtol=1e-5)


def test_decode_clamps_log_size() -> None:
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    out = BoxCoder().decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), anchor)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(1000.0))


def test_rejects_wrong_dimensionality() -> None:
    with pytest.raises(ValueError, match="4 \\(2D\\) or 6 \\(3D\\)"):
        BoxCoder((1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="built for 2D"):
        BoxCoder().encode(_random_boxes(3, d=3), _random_boxes(3, d=3))
