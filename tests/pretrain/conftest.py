"""Shared helpers of the pretraining tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from ssmd.models.backbones.resnet import build_resnet
from ssmd.pretrain.base import build_pretrain_method


def _tiny_nuclei(n: int = 8) -> list[torch.Tensor]:
    from ssmd.data import build_dataset

    ds = build_dataset("synthetic", None, n_images=n, image_size=64)
    return [ds[i].image for i in range(n)]


def _loss_before_and_after(name: str, steps: int = 30, lr: float = 3e-3) -> tuple[float, float]:
    """The method's loss on one fixed set of views, before and after ``steps`` Adam steps on
    fresh views of 8 synthetic nuclei images."""
    from ssmd.pretrain.views import augment_from_config

    images = _tiny_nuclei()
    torch.manual_seed(0)
    net = build_resnet("resnet18", width_multiplier=0.125, norm="gn")
    method = build_pretrain_method(name, net, net.out_channels, {})
    aug = augment_from_config({"crop_size": 32, "scale": [0.5, 1.0]}, [0.5], [0.25])
    torch.manual_seed(123)
    fixed = aug(images)

    def evaluate() -> float:
        with torch.no_grad():
            return float(method.training_step(fixed, None, 0, 1)["loss"])

    before = evaluate()
    opt = torch.optim.Adam(method.trainable_parameters(), lr=lr)
    for step in range(steps):
        loss = method.training_step(aug(images), None, step, steps)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, evaluate()


@pytest.fixture
def loss_before_and_after() -> Callable[..., tuple[float, float]]:
    """``name -> (loss before, loss after)`` of a short pretraining (see the function above)."""
    pytest.importorskip("lightly")
    return _loss_before_and_after
