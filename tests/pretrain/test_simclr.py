"""SimCLR: NT-Xent against hand values, symmetry, gradients reaching the trunk."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from ssmd.models.backbones.resnet import build_resnet
from ssmd.pretrain.base import build_pretrain_method
from ssmd.pretrain.simclr import SimCLR
from ssmd.pretrain.views import MultiViewAugment

pytest.importorskip("lightly")


def _method(**kw: object) -> SimCLR:
    net = build_resnet("resnet18", width_multiplier=0.125, norm="gn")
    method = build_pretrain_method("simclr", net, net.out_channels, dict(kw))
    assert isinstance(method, SimCLR)
    return method


def test_nt_xent_by_hand() -> None:
    """Eq. (1) with 2 images: z0 = z1 = [e1, e2], tau = 0.5. Each of the 4 views has its partner
    at cosine 1 and the other image's two views at cosine 0, so
    l = -log(e^2 / (e^2 + 2 e^0)) = log(1 + 2 e^-2) for every view."""
    crit = _method(temperature=0.5).criterion
    z = torch.eye(2)
    torch.testing.assert_close(crit(z, z.clone()), torch.tensor(math.log(1 + 2 * math.exp(-2))))
    # a pair at cosine -1 against negatives at 0: l = -log(e^-2 / (e^-2 + 2)) = log(1 + 2 e^2)
    far = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    near = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])
    torch.testing.assert_close(crit(far, near), torch.tensor(math.log(1 + 2 * math.exp(2))))


def test_loss_is_symmetric_in_the_views_and_reaches_the_trunk() -> None:
    torch.manual_seed(0)
    method = _method()
    a, b = torch.randn(6, 128), torch.randn(6, 128)
    torch.testing.assert_close(method.criterion(a, b), method.criterion(b, a))
    aug = MultiViewAugment(crop_size=32)
    batch = aug([torch.rand(3, 48, 48) for _ in range(4)])
    losses = method.training_step(batch, None, 0, 1)
    assert float(losses["loss"].detach()) > 0
    losses["loss"].backward()
    grad = method.backbone.conv1.weight.grad  # type: ignore[union-attr]
    assert grad is not None and float(grad.abs().sum()) > 0
    assert method.describe() == {
        "name": "simclr",
        "temperature": 0.2,
        "hidden_dim": 512,
        "output_dim": 128,
    }


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match=r"pretrain\.method\.temperature = 0"):
        _method(temperature=0)
    with pytest.raises(ValueError, match=r"method\.tau"):
        _method(tau=0.1)


@pytest.mark.slow
def test_loss_decreases_on_a_tiny_synthetic_set(
    loss_before_and_after: Callable[[str], tuple[float, float]],
) -> None:
    before, after = loss_before_and_after("simclr")
    assert before > 2.0  # near chance: log(15) = 2.71 for 16 views
    assert after < 0.85 * before, (before, after)  # measured 2.70 -> 1.75


def test_missing_lightly_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "lightly", None)  # import lightly -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'ssmd\[pretrain\]'"):
        _method()
