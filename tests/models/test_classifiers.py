"""Classifier trunks: output shapes, widths, the small-input stem."""

from __future__ import annotations

import pytest
import torch

from ssmd.models.classifiers import build_classifier


@pytest.mark.parametrize(
    ("name", "width", "feat"),
    [("resnet18", 0.125, 64), ("resnet50", 0.0625, 128), ("densenet121", 0.125, 128)],
)
def test_logits_and_pooled_features(name: str, width: float, feat: int) -> None:
    model = build_classifier(
        name, num_classes=3, in_channels=1, width_multiplier=width, small_input=True
    )
    logits, feats = model(torch.rand(2, 1, 28, 28))
    assert logits.shape == (2, 3)
    assert feats.shape == (2, feat)
    assert model.feature_dim == feat


def test_small_stem_keeps_resolution() -> None:
    x = torch.rand(1, 3, 32, 32)
    small = build_classifier("resnet18", 2, 3, 0.125, small_input=True).eval()
    big = build_classifier("resnet18", 2, 3, 0.125, small_input=False).eval()
    assert small.forward_maps(x)[2].shape[-1] == 4  # stride 8
    assert big.forward_maps(x)[2].shape[-1] == 1  # stride 32


def test_pooled_features_are_the_mean_of_the_map() -> None:
    model = build_classifier("densenet121", 2, 1, 0.125, small_input=True).eval()
    _, feats, fmap = model.forward_maps(torch.rand(2, 1, 16, 16))
    assert torch.allclose(feats, fmap.mean(dim=(2, 3)))
    assert bool((fmap >= 0).all())  # after the final ReLU


def test_unknown_backbone() -> None:
    with pytest.raises(KeyError, match="resnet18"):
        build_classifier("vgg11")
