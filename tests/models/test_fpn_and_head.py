"""FPN levels and the RetinaNet head's shapes and prior-probability initialisation."""

from __future__ import annotations

import pytest
import torch

from ssmd.models.heads.retinanet_head import RetinaNetHead, group_norm_groups
from ssmd.models.necks.fpn import FPN


def _features(h: int, w: int) -> list[torch.Tensor]:
    return [torch.randn(2, c, -(-h // s), -(-w // s)) for c, s in ((32, 8), (64, 16), (128, 32))]


@pytest.mark.parametrize("extra_from", ["c5", "p5"])
def test_fpn_p3_to_p7(extra_from: str) -> None:
    fpn = FPN((32, 64, 128), out_channels=48, extra_from=extra_from)  # type: ignore[arg-type]
    levels = fpn(_features(128, 128))
    assert [tuple(p.shape) for p in levels] == [(2, 48, 16 // 2**i, 16 // 2**i) for i in range(5)]
    odd = fpn(_features(200, 333))
    assert [tuple(p.shape[2:]) for p in odd] == [(25, 42), (13, 21), (7, 11), (4, 6), (2, 3)]


def test_fpn_p6_reads_c5_by_default() -> None:
    fpn = FPN((32, 64, 128), out_channels=16)
    assert fpn.extra[0].in_channels == 128
    with pytest.raises(ValueError, match="inputs"):
        fpn(_features(64, 64)[:2])


@pytest.mark.parametrize("num_classes", [1, 3])
def test_softmax_head_starts_at_background_099(num_classes: int) -> None:
    head = RetinaNetHead(32, 9, num_classes, activation="softmax", num_convs=2)
    cls, box = head([torch.randn(2, 32, 8, 8), torch.randn(2, 32, 4, 4)])
    assert [tuple(c.shape) for c in cls] == [
        (2, 9, num_classes + 1, 8, 8),
        (2, 9, num_classes + 1, 4, 4),
    ]
    assert [tuple(b.shape) for b in box] == [(2, 9, 4, 8, 8), (2, 9, 4, 4, 4)]
    probs = cls[0].softmax(dim=2)
    torch.testing.assert_close(probs[:, :, 0].mean(), torch.tensor(0.99), atol=2e-3, rtol=0)
    torch.testing.assert_close(probs[:, :, 1:].sum(2).mean(), torch.tensor(0.01), atol=2e-3, rtol=0)


def test_sigmoid_head_starts_at_prior() -> None:
    head = RetinaNetHead(32, 9, 2, activation="sigmoid", num_convs=4, norm="gn")
    cls, _ = head([torch.randn(1, 32, 8, 8)])
    assert cls[0].shape == (1, 9, 2, 8, 8)
    torch.testing.assert_close(cls[0].sigmoid().mean(), torch.tensor(0.01), atol=2e-3, rtol=0)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in head.modules()) == 8


def test_group_norm_groups() -> None:
    assert group_norm_groups(256) == 32
    assert group_norm_groups(48) == 24
    assert group_norm_groups(7) == 7


def test_head_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="activation"):
        RetinaNetHead(8, 9, 1, activation="tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes"):
        RetinaNetHead(8, 9, 0)
