"""Intensity and stain transforms for microscopy: one nucleus polarity, stain jitter, grey views.

Nuclei images come as fluorescence (bright nuclei, dark background), brightfield and stained
tissue (dark nuclei, bright background). A detector trained mostly on one polarity fails on
the other (issue 25: AP50 0.18 on unseen stained images). These transforms act on
``Sample.image`` (``Tensor[3, H, W]`` in ``[0, 1]``, before normalisation) and never move boxes.

- :class:`DarkBackground` (deterministic, applied to every image, test images too): inverts
  an image whose median grey value is above 0.5, so nuclei are always brighter than the
  background.
- :class:`RandomStainJitter` (training only): the H&E deconvolution jitter of Tellez et al.
  (2018): RGB -> optical density -> HED stain concentrations through the Ruifrok & Johnston
  (2001) stain matrix, each channel scaled by ``U(1 - s, 1 + s)`` and shifted by
  ``U(-s, s)``, and back. It acts only on colour images (grey images have no stain).
- :class:`RandomGrey` (training only): replaces a colour image by its luminance in all three
  channels with probability ``p``, so colour is not a shortcut to "nucleus".
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssmd.structures.sample import Sample

__all__ = [
    "DarkBackground",
    "RandomGrey",
    "RandomStainJitter",
    "hed_to_rgb",
    "is_colour",
    "rgb_to_hed",
]

# Ruifrok & Johnston (2001) stain vectors (rows: haematoxylin, eosin, DAB) in optical density
_RGB_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64
)
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_EPS = 1e-6  # optical density of a fully white pixel stays finite


def is_colour(image: Tensor, tol: float = 0.03) -> bool:
    """Whether a ``Tensor[3, H, W]`` image has colour (mean channel difference above ``tol``)."""
    if image.shape[0] != 3:
        return False
    spread = (image[0] - image[1]).abs().mean() + (image[1] - image[2]).abs().mean()
    return bool(spread / 2 > tol)


def rgb_to_hed(image: Tensor) -> Tensor:
    """Stain concentrations ``Tensor[3, H, W]`` (H, E, D) of an RGB image in ``[0, 1]``."""
    od = -torch.log(image.double().clamp(min=_EPS))  # (3, H, W) optical density
    return torch.einsum("ij,jhw->ihw", _HED_FROM_RGB.T, od)


def hed_to_rgb(hed: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hed`, clipped to ``[0, 1]`` (float32)."""
    od = torch.einsum("ij,jhw->ihw", _RGB_FROM_HED.T, hed.double())
    return torch.exp(-od).clamp(0.0, 1.0).float()


class DarkBackground:
    """Invert images whose median grey value is above ``threshold`` (bright background)."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def __call__(self, sample: Sample) -> Sample:
        image = sample.image
        if float(image.mean(dim=0).median()) > self.threshold:
            return sample.replace(image=1.0 - image)
        return sample

    def __repr__(self) -> str:
        return f"DarkBackground(threshold={self.threshold})"


class RandomStainJitter:
    """HED stain jitter of colour images (module docstring); grey images pass unchanged."""

    def __init__(self, sigma: float = 0.05) -> None:
        if not 0.0 <= sigma < 1.0:
            raise ValueError(f"augment.stain_jitter = {sigma}: expected a value in [0, 1)")
        self.sigma = sigma

    def __call__(self, sample: Sample) -> Sample:
        image = sample.image
        if self.sigma == 0 or not is_colour(image):
            return sample
        alpha = 1.0 + (torch.rand(3, 1, 1, dtype=torch.float64) * 2 - 1) * self.sigma
        beta = (torch.rand(3, 1, 1, dtype=torch.float64) * 2 - 1) * self.sigma
        hed = rgb_to_hed(image) * alpha + beta
        return sample.replace(image=hed_to_rgb(hed))

    def __repr__(self) -> str:
        return f"RandomStainJitter(sigma={self.sigma})"


class RandomGrey:
    """With probability ``p``, a colour image becomes its luminance (ITU-R BT.601) x 3."""

    def __init__(self, p: float = 0.2) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"augment.grey = {p}: expected a probability")
        self.p = p

    def __call__(self, sample: Sample) -> Sample:
        image = sample.image
        if image.shape[0] != 3 or float(torch.rand(())) >= self.p:
            return sample
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
        grey = (image * weights).sum(dim=0, keepdim=True)
        return sample.replace(image=grey.expand(3, -1, -1).contiguous())

    def __repr__(self) -> str:
        return f"RandomGrey(p={self.p})"
