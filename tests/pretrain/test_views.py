"""Pretraining views: exact geometry, grey stays grey, colour jitter on colour only, presets."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import RandomResizedCrop

from ssmd.pretrain.views import PRESETS, MultiViewAugment, augment_from_config, is_grey

OFF = dict.fromkeys(
    ("brightness", "contrast", "gamma", "saturation", "hue", "stain", "grayscale", "blur"), 0.0
)


def _coordinate_image(h: int, w: int) -> torch.Tensor:
    """Channel 0 = x / W, channel 1 = y / H of each pixel centre (pixel edges at integers)."""
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return torch.stack([xs / w, ys / h, torch.zeros(h, w)])  # (3, H, W)


def test_theta_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        RandomResizedCrop, "get_params", staticmethod(lambda *a, **k: (10, 20, 30, 40))
    )
    image = torch.rand(3, 64, 80)
    plain = MultiViewAugment(crop_size=16, hflip=0, vflip=0, rot90=False, **OFF)
    # crop top 10, left 20, 30 high, 40 wide: half sizes (20, 15), centre (40, 25)
    torch.testing.assert_close(
        plain.sample_theta(image), torch.tensor([[20.0, 0.0, 40.0], [0.0, 15.0, 25.0]])
    )
    flipped = MultiViewAugment(crop_size=16, hflip=1, vflip=1, rot90=False, **OFF)
    torch.testing.assert_close(
        flipped.sample_theta(image), torch.tensor([[-20.0, 0.0, 40.0], [0.0, -15.0, 25.0]])
    )
    # view -> normalised source coordinates: x_n = 2x/W - 1 (W = 80), y_n = 2y/H - 1 (H = 64)
    norm = MultiViewAugment.pixel_to_normalised(plain.sample_theta(image), 64, 80)
    torch.testing.assert_close(norm, torch.tensor([[0.5, 0.0, 0.0], [0.0, 15 / 32, -0.21875]]))


def test_every_view_pixel_comes_from_where_its_grid_says() -> None:
    """Crops, flips and 90-degree rotations: the grid of a view at its own resolution gives the
    source coordinates that the view's pixels hold (a coordinate-encoding image)."""
    torch.manual_seed(3)
    h, w = 60, 90
    aug = MultiViewAugment(
        crop_size=12, hflip=0.5, vflip=0.5, rot90=True, mean=[0.0], std=[1.0], n_views=4, **OFF
    )
    batch = aug([_coordinate_image(h, w), _coordinate_image(h, w)])
    assert len(batch.views) == 4 and batch.views[0].shape == (2, 3, 12, 12)
    rotations = set()
    for v, view in enumerate(batch.views):
        grid = batch.grid(v, 12, 12)  # (B, 12, 12, 2) source pixels (x, y)
        torch.testing.assert_close(view[:, 0] * w, grid[..., 0], atol=1e-3, rtol=0)
        torch.testing.assert_close(view[:, 1] * h, grid[..., 1], atol=1e-3, rtol=0)
        rotations |= {tuple(t[:, :2].sign().flatten().tolist()) for t in batch.thetas[v]}
    assert len(rotations) > 1  # the draws did rotate / flip
    # a coarser map (a C5 cell covers 4 x 4 view pixels): its grid is the mean of those pixels'
    coarse = batch.grid(0, 3, 3)
    fine = batch.grid(0, 12, 12).view(2, 3, 4, 3, 4, 2).mean(dim=(2, 4))
    torch.testing.assert_close(coarse, fine, atol=1e-4, rtol=0)


def test_grey_images_stay_grey_under_every_colour_operation() -> None:
    torch.manual_seed(0)
    strong = {"saturation": 1.0, "hue": 0.5, "stain": 0.5, "grayscale": 0.5}
    aug = MultiViewAugment(crop_size=16, mean=[0.0], std=[1.0], blur=0.5, noise=0.05, **strong)
    grey_rgb = torch.rand(1, 40, 40).expand(3, 40, 40).clone()
    batch = aug([grey_rgb, grey_rgb.flip(-1)])
    for view in batch.views:
        assert view.shape == (2, 3, 16, 16)
        assert all(is_grey(v) for v in view)
        assert float(view.std()) > 0.01  # not blank: intensity jitter kept the content
    one = MultiViewAugment(crop_size=16, **strong)([torch.rand(1, 40, 50)])
    assert one.views[0].shape == (1, 1, 16, 16)


def test_stain_jitter_changes_colour_images_only() -> None:
    torch.manual_seed(0)
    he = torch.tensor([0.80, 0.45, 0.70]).view(3, 1, 1).expand(3, 32, 32).clone()  # pink
    grey = torch.full((3, 32, 32), 0.6)
    aug = MultiViewAugment(
        crop_size=8,
        hflip=0,
        vflip=0,
        rot90=False,
        mean=[0.0],
        std=[1.0],
        n_views=2,
        **{**OFF, "stain": 0.3},
    )
    batch = aug([he, grey])
    for view in batch.views:
        assert float((view[0] - he[:, :8, :8]).abs().max()) > 0.01  # the H&E colour moved
        torch.testing.assert_close(view[1], grey[:, :8, :8])  # grey untouched
        assert float(view.min()) >= 0.0 and float(view.max()) <= 1.0


def test_normalisation_uses_the_runs_mean_and_std() -> None:
    aug = MultiViewAugment(
        crop_size=8, hflip=0, vflip=0, rot90=False, mean=[0.5], std=[0.25], **OFF
    )
    batch = aug([torch.full((3, 16, 16), 0.75), torch.full((3, 16, 16), 0.25)])
    torch.testing.assert_close(batch.views[0][0], torch.full((3, 8, 8), 1.0))  # (0.75-0.5)/0.25
    torch.testing.assert_close(batch.views[0][1], torch.full((3, 8, 8), -1.0))


def test_presets_and_overrides() -> None:
    us = augment_from_config({"preset": "ultrasound"}, [0.5], [0.25])
    assert us.vflip == 0.0 and not us.rot90 and us.speckle == PRESETS["ultrasound"]["speckle"]
    micro = augment_from_config(
        {"preset": "microscopy", "rot90": False, "crop_size": 64}, [0.5], [0.25]
    )
    assert micro.vflip == 0.5 and not micro.rot90 and micro.crop_size == 64
    with pytest.raises(ValueError, match=r"pretrain\.augment\.preset = 'mri': unknown"):
        augment_from_config({"preset": "mri"}, [0.5], [0.25])
    with pytest.raises(ValueError, match=r"unknown key pretrain\.augment\.colour"):
        augment_from_config({"colour": 0.3}, [0.5], [0.25])
    with pytest.raises(ValueError, match=r"augment\.hflip = 2: must be a number in \[0, 1\]"):
        MultiViewAugment(hflip=2)
    with pytest.raises(ValueError, match=r"augment\.scale = \[0\.5, 0\.2\]"):
        MultiViewAugment(scale=(0.5, 0.2))
