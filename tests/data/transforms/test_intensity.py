"""Stain and polarity transforms (issue 25), on hand-made grey and H&E-like images."""

from __future__ import annotations

import torch

from ssmd.data.transforms.intensity import (
    DarkBackground,
    RandomGrey,
    RandomStainJitter,
    hed_to_rgb,
    is_colour,
    rgb_to_hed,
)
from ssmd.structures.sample import Sample


def _he_image() -> torch.Tensor:
    """A synthetic H&E patch: pink (eosin) background, one purple (haematoxylin) nucleus."""
    hed = torch.zeros(3, 16, 16, dtype=torch.float64)
    hed[1] = 0.3  # eosin everywhere
    hed[0, 4:10, 4:10] = 1.0  # haematoxylin in the nucleus
    return hed_to_rgb(hed)


def _sample(image: torch.Tensor) -> Sample:
    return Sample(image, torch.tensor([[4.0, 4.0, 10.0, 10.0]]), torch.tensor([1]), image_id=1)


def test_hed_round_trip_and_stain_separation() -> None:
    image = _he_image()
    assert is_colour(image)
    hed = rgb_to_hed(image)
    assert torch.allclose(hed_to_rgb(hed), image, atol=1e-5)
    assert (
        float(hed[0, 5, 5]) > 0.9 and abs(float(hed[0, 0, 0])) < 1e-5
    )  # haematoxylin only in the nucleus
    assert abs(float(hed[1, 0, 0]) - 0.3) < 1e-5


def test_stain_jitter_changes_colour_images_only_and_keeps_boxes() -> None:
    torch.manual_seed(0)
    he = _sample(_he_image())
    out = RandomStainJitter(0.2)(he)
    assert not torch.allclose(out.image, he.image) and torch.equal(out.boxes, he.boxes)
    # the jitter is a per-channel affine map in stain space: the nucleus stays haematoxylin-rich
    hed = rgb_to_hed(out.image)
    assert float(hed[0, 5, 5]) > 0.7 and float(hed[0, 0, 0]) < 0.3
    grey = _sample(torch.full((3, 16, 16), 0.4))
    assert RandomStainJitter(0.2)(grey) is grey


def test_grey_view_and_dark_background() -> None:
    he = _sample(_he_image())
    g = RandomGrey(1.0)(he).image
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2]) and not is_colour(g)
    assert RandomGrey(0.0)(he).image is he.image
    bright = _sample(torch.full((3, 16, 16), 0.9))
    bright.image[:, 4:10, 4:10] = 0.2  # dark nucleus on a bright background
    out = DarkBackground()(bright)
    assert float(out.image[0, 5, 5]) > float(out.image[0, 0, 0])
    dark = _sample(torch.full((3, 16, 16), 0.1))
    assert DarkBackground()(dark) is dark
