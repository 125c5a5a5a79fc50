"""Random views of unlabeled images for self-supervised pretraining, with their geometry.

:class:`MultiViewAugment` turns a list of images (``Tensor[C, H, W]`` in ``[0, 1]``, any
sizes, 1 or 3 channels) into ``n_views`` batches of square crops, and records for every view
the affine map from the view's normalised coordinates to the source image's pixels
(:attr:`ViewBatch.thetas`). A dense objective reads from it where each cell of any feature
map lies in the source image (:meth:`ViewBatch.grid`), which is exact under crops, flips and
90-degree rotations — the location grids that VICRegL's location-based matching needs
(Sec. 3.2 of the VICRegL paper), without re-deriving the transforms.

The pipeline, per view and image:

1. **geometry** — a random resized crop (torchvision's ``RandomResizedCrop.get_params``: area
   fraction ``scale``, aspect ``ratio``), then horizontal / vertical flips and a random
   multiple of 90 degrees, all folded into one affine map and sampled once with
   ``grid_sample`` to ``crop_size x crop_size``;
2. **intensity** (every image) — brightness (multiplicative), contrast (around the view's
   mean), gamma, blur (Gaussian, ``blur_sigma``), additive noise and multiplicative speckle;
3. **colour** (colour images only) — saturation, hue, H&E stain jitter and conversion to grey.
   An image whose channels are equal (a fluorescence or X-ray image stored as RGB, or a
   1-channel image) is grey: it never gets colour operations and stays grey, so no colour is
   invented where the modality has none;
4. clip to ``[0, 1]`` and normalise with the downstream run's ``data.mean`` / ``data.std``
   (the pretrained trunk must see the intensities it will see in fine-tuning).

Stain jitter follows Tellez et al. (2018, "Whole-slide mitosis detection in H&E breast
histology using PHH3 as a reference"): colour deconvolution into haematoxylin, eosin and DAB
concentrations (Ruifrok & Johnston's matrix; :func:`ssmd.data.transforms.intensity.rgb_to_hed`,
shared with the training augmentation's ``augment.stain_jitter``), each scaled by
``U(1 - s, 1 + s)`` and shifted by ``U(-s, s)``, and recomposed.

Every modality has a preset (:data:`PRESETS`); a config sets ``preset`` and overrides any key.
Randomness comes from torch's global generator, which training checkpoints store, so a resumed
run draws the same views. Only 2D images are handled (a 3D volume needs a 3D affine map and
``grid_sample`` on 5D tensors; the same construction extends to it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from ssmd.data.transforms.intensity import hed_to_rgb, rgb_to_hed

__all__ = [
    "AUGMENT_KEYS",
    "PRESETS",
    "MultiViewAugment",
    "ViewBatch",
    "augment_from_config",
    "is_grey",
]

PRESETS: dict[str, dict[str, Any]] = {
    # fluorescence / brightfield / H&E: no canonical orientation, stain variation between labs
    "microscopy": {
        "hflip": 0.5,
        "vflip": 0.5,
        "rot90": True,
        "brightness": 0.4,
        "contrast": 0.4,
        "gamma": 0.2,
        "saturation": 0.2,
        "hue": 0.0,
        "stain": 0.05,
        "grayscale": 0.1,
        "blur": 0.3,
        "noise": 0.02,
        "speckle": 0.0,
    },
    # B-mode ultrasound: the transducer is at the top (no vertical flip or rotation); gain and
    # time-gain compensation change brightness and gamma; speckle is multiplicative
    "ultrasound": {
        "hflip": 0.5,
        "vflip": 0.0,
        "rot90": False,
        "brightness": 0.3,
        "contrast": 0.3,
        "gamma": 0.3,
        "saturation": 0.0,
        "hue": 0.0,
        "stain": 0.0,
        "grayscale": 0.0,
        "blur": 0.3,
        "noise": 0.0,
        "speckle": 0.15,
    },
    # CT slices after windowing to [0, 1]: brightness / contrast play window level / width
    "ct": {
        "hflip": 0.5,
        "vflip": 0.0,
        "rot90": False,
        "brightness": 0.1,
        "contrast": 0.3,
        "gamma": 0.0,
        "saturation": 0.0,
        "hue": 0.0,
        "stain": 0.0,
        "grayscale": 0.0,
        "blur": 0.2,
        "noise": 0.03,
        "speckle": 0.0,
    },
    # chest X-ray: upright anatomy (no vertical flip or rotation), exposure differences
    "xray": {
        "hflip": 0.5,
        "vflip": 0.0,
        "rot90": False,
        "brightness": 0.3,
        "contrast": 0.3,
        "gamma": 0.2,
        "saturation": 0.0,
        "hue": 0.0,
        "stain": 0.0,
        "grayscale": 0.0,
        "blur": 0.3,
        "noise": 0.02,
        "speckle": 0.0,
    },
    # dermoscopy: no orientation; lighting and camera colour vary
    "dermoscopy": {
        "hflip": 0.5,
        "vflip": 0.5,
        "rot90": True,
        "brightness": 0.3,
        "contrast": 0.3,
        "gamma": 0.0,
        "saturation": 0.3,
        "hue": 0.05,
        "stain": 0.0,
        "grayscale": 0.1,
        "blur": 0.3,
        "noise": 0.0,
        "speckle": 0.0,
    },
}
"""Per-modality augmentation settings (the keys :class:`MultiViewAugment` takes)."""

AUGMENT_KEYS = (
    "preset",
    "crop_size",
    "scale",
    "ratio",
    "blur_sigma",
    *PRESETS["microscopy"],
)
"""The keys of a config's ``pretrain.augment`` section."""


def is_grey(image: Tensor, tol: float = 1.0 / 512) -> bool:
    """Whether ``image`` (``Tensor[C, H, W]``) has one channel or all channels equal."""
    if image.shape[0] == 1:
        return True
    x = image.float()
    return bool((x.amax(dim=0) - x.amin(dim=0)).max() <= tol)


@dataclass
class ViewBatch:
    """``n_views`` augmented views of ``B`` images, and where each view lies in its image.

    Attributes:
        views: ``n_views`` tensors ``Tensor[B, C, S, S]``, normalised.
        thetas: ``n_views`` tensors ``Tensor[B, 2, 3]``: ``theta @ (u, v, 1)`` is the source
            pixel ``(x, y)`` (pixel edges at integers) of the view point with normalised
            coordinates ``(u, v)`` in ``[-1, 1]`` (``grid_sample``'s, ``align_corners=False``).
        sizes: source image sizes ``Tensor[B, 2]`` as ``(H, W)``.
        indices: dataset positions ``LongTensor[B]``.
    """

    views: list[Tensor]
    thetas: list[Tensor]
    sizes: Tensor
    indices: Tensor

    def __len__(self) -> int:
        return int(self.views[0].shape[0])

    def grid(self, view: int, height: int, width: int) -> Tensor:
        """Source pixel ``(x, y)`` of every cell centre of an ``height x width`` map of ``view``.

        Returns:
            ``Tensor[B, height, width, 2]`` (VICRegL's location grid).
        """
        theta = self.thetas[view]
        size = (theta.shape[0], 1, int(height), int(width))
        return F.affine_grid(theta, list(size), align_corners=False)  # (B, h, w, 2)


def _uniform(n: int, lo: float, hi: float) -> Tensor:
    return torch.rand(n) * (hi - lo) + lo


class MultiViewAugment:
    """Random crops, flips, 90-degree rotations and intensity / colour jitter (module docstring).

    Args:
        crop_size: side ``S`` of every view.
        scale: area fraction range of the crop (RandomResizedCrop).
        ratio: aspect ratio range of the crop.
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        rot90: rotate by a random multiple of 90 degrees.
        brightness: intensity factor drawn from ``U(1 - b, 1 + b)``.
        contrast: factor ``U(1 - c, 1 + c)`` around the view's mean.
        gamma: exponent ``exp(U(-g, g))``.
        saturation: colour images: factor ``U(1 - s, 1 + s)`` of the distance from grey.
        hue: colour images: hue shift ``U(-h, h)`` (in turns, as torchvision's).
        stain: colour images: H&E stain jitter strength (Tellez et al.; 0.05 typical).
        grayscale: colour images: probability of converting the view to grey.
        blur: probability of a Gaussian blur.
        blur_sigma: range of the blur's sigma in view pixels.
        noise: standard deviation of additive Gaussian noise (``[0, 1]`` units).
        speckle: standard deviation of multiplicative noise ``x * (1 + n)``.
        mean: normalisation mean (1 value, or one per channel).
        std: normalisation std.
        n_views: views per image.

    Raises:
        ValueError: a setting out of range (named with its value).
    """

    def __init__(
        self,
        crop_size: int = 128,
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        vflip: float = 0.5,
        rot90: bool = True,
        brightness: float = 0.4,
        contrast: float = 0.4,
        gamma: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        stain: float = 0.0,
        grayscale: float = 0.0,
        blur: float = 0.0,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        noise: float = 0.0,
        speckle: float = 0.0,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.25,),
        n_views: int = 2,
    ) -> None:
        checks: dict[str, tuple[float, float, float]] = {
            "hflip": (hflip, 0, 1),
            "vflip": (vflip, 0, 1),
            "brightness": (brightness, 0, 1),
            "contrast": (contrast, 0, 1),
            "gamma": (gamma, 0, 3),
            "saturation": (saturation, 0, 1),
            "hue": (hue, 0, 0.5),
            "stain": (stain, 0, 1),
            "grayscale": (grayscale, 0, 1),
            "blur": (blur, 0, 1),
            "noise": (noise, 0, 1),
            "speckle": (speckle, 0, 1),
        }
        for key, (value, lo, hi) in checks.items():
            if not (isinstance(value, int | float) and lo <= float(value) <= hi):
                raise ValueError(f"augment.{key} = {value!r}: must be a number in [{lo}, {hi}]")
        if int(crop_size) < 8:
            raise ValueError(f"augment.crop_size = {crop_size!r}: must be >= 8")
        for key, pair, lo, hi in (
            ("scale", scale, 0.0, 1.0),
            ("ratio", ratio, 0.0, math.inf),
            ("blur_sigma", blur_sigma, 0.0, math.inf),
        ):
            if len(pair) != 2 or not (lo < float(pair[0]) <= float(pair[1]) <= hi):
                raise ValueError(
                    f"augment.{key} = {list(pair)!r}: need [low, high] with {lo:g} < low <= high"
                    + (f" <= {hi:g}" if math.isfinite(hi) else "")
                )
        if n_views < 2:
            raise ValueError(f"n_views = {n_views}: a self-supervised pair needs at least 2")
        if not mean or not std or len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"data.mean = {list(mean)!r} / data.std = {list(std)!r}: bad values")
        self.crop_size = int(crop_size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.hflip, self.vflip, self.rot90 = float(hflip), float(vflip), bool(rot90)
        self.brightness, self.contrast, self.gamma = (
            float(brightness),
            float(contrast),
            float(gamma),
        )
        self.saturation, self.hue, self.stain = float(saturation), float(hue), float(stain)
        self.grayscale, self.blur = float(grayscale), float(blur)
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.noise, self.speckle = float(noise), float(speckle)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.n_views = int(n_views)

    # ------------------------------------------------------------------ geometry
    def sample_theta(self, image: Tensor) -> Tensor:
        """A random crop + flips + rotation of ``image`` as ``Tensor[2, 3]`` (view -> pixels)."""
        top, left, h, w = RandomResizedCrop.get_params(
            image, scale=list(self.scale), ratio=list(self.ratio)
        )
        k = int(torch.randint(4, (1,))) if self.rot90 else 0
        cos, sin = (1, 0, -1, 0)[k], (0, 1, 0, -1)[k]
        rot = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float32)
        fx = -1.0 if float(torch.rand(())) < self.hflip else 1.0
        fy = -1.0 if float(torch.rand(())) < self.vflip else 1.0
        half = torch.diag(torch.tensor([w / 2.0, h / 2.0]))
        linear = half @ rot @ torch.diag(torch.tensor([fx, fy]))  # (2, 2)
        centre = torch.tensor([left + w / 2.0, top + h / 2.0]).view(2, 1)
        return torch.cat([linear, centre], dim=1)  # (2, 3)

    @staticmethod
    def pixel_to_normalised(theta: Tensor, height: int, width: int) -> Tensor:
        """``theta`` (view -> source pixels) as view -> source normalised coordinates."""
        to_norm = torch.tensor([[2.0 / width, 0.0], [0.0, 2.0 / height]])
        out = to_norm @ theta  # (2, 3)
        out[:, 2] -= 1.0
        return out

    def _crop(self, image: Tensor, theta: Tensor) -> Tensor:
        h, w = int(image.shape[-2]), int(image.shape[-1])
        norm = self.pixel_to_normalised(theta, h, w)[None]  # (1, 2, 3)
        size = [1, int(image.shape[0]), self.crop_size, self.crop_size]
        grid = F.affine_grid(norm, size, align_corners=False)  # (1, S, S, 2)
        out = F.grid_sample(
            image[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return out[0]  # (C, S, S)

    # ------------------------------------------------------------------ intensity and colour
    def _intensity(self, x: Tensor, colour: Tensor) -> Tensor:
        """Jitter views ``x`` (``Tensor[B, C, S, S]`` in [0, 1]); ``colour``: ``BoolTensor[B]``."""
        b = x.shape[0]
        shape = (b, 1, 1, 1)
        if self.brightness > 0:
            x = x * _uniform(b, 1 - self.brightness, 1 + self.brightness).view(shape)
        if self.contrast > 0:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
            x = (x - mean) * _uniform(b, 1 - self.contrast, 1 + self.contrast).view(shape) + mean
        x = x.clamp(0.0, 1.0)
        if self.gamma > 0:
            x = x.pow(torch.exp(_uniform(b, -self.gamma, self.gamma)).view(shape))
        if x.shape[1] == 3 and bool(colour.any()):
            x = self._colour(x, colour)
        if self.blur > 0:
            picked = torch.rand(b) < self.blur
            sigmas = _uniform(b, *self.blur_sigma)
            x = x.clone()
            for i in torch.nonzero(picked).flatten().tolist():
                s = float(sigmas[i])
                k = min(2 * math.ceil(3 * s) + 1, self.crop_size - (1 - self.crop_size % 2))
                x[i] = TF.gaussian_blur(x[i], kernel_size=[k, k], sigma=[s, s])
        if self.speckle > 0:
            x = x * (1 + self.speckle * torch.randn(b, 1, *x.shape[2:]))
        if self.noise > 0:
            x = x + self.noise * torch.randn(b, 1, *x.shape[2:])  # same noise in every channel
        return x.clamp(0.0, 1.0)

    def _colour(self, x: Tensor, colour: Tensor) -> Tensor:
        """Saturation, hue, stain and grey conversion of the colour views (``colour[i]``)."""
        b = x.shape[0]
        c = colour.view(b, 1, 1, 1)
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        if self.saturation > 0:
            grey = (x * weights).sum(dim=1, keepdim=True)  # (B, 1, S, S)
            f = _uniform(b, 1 - self.saturation, 1 + self.saturation).view(b, 1, 1, 1)
            x = torch.where(c, (grey + f * (x - grey)).clamp(0.0, 1.0), x)
        if self.hue > 0:
            shifts = _uniform(b, -self.hue, self.hue)
            x = x.clone()
            for i in torch.nonzero(colour).flatten().tolist():
                x[i] = TF.adjust_hue(x[i], float(shifts[i]))
        if self.stain > 0:
            alpha = _uniform(3 * b, 1 - self.stain, 1 + self.stain).view(b, 3, 1, 1)
            beta = _uniform(3 * b, -self.stain, self.stain).view(b, 3, 1, 1)
            x = x.clone()
            for i in torch.nonzero(colour).flatten().tolist():
                hed = rgb_to_hed(x[i]) * alpha[i].double() + beta[i].double()  # (3, S, S)
                x[i] = hed_to_rgb(hed)
        if self.grayscale > 0:
            to_grey = colour & (torch.rand(b) < self.grayscale)
            grey = (x * weights).sum(dim=1, keepdim=True).expand_as(x)
            x = torch.where(to_grey.view(b, 1, 1, 1), grey, x)
        return x

    def normalise(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` per channel (one value applies to every channel)."""
        channels = x.shape[1]
        if len(self.mean) not in (1, channels):
            raise ValueError(
                f"data.mean = {self.mean!r}: need 1 or {channels} values for {channels}-channel images"
            )
        mean = torch.tensor(self.mean * (channels if len(self.mean) == 1 else 1))
        std = torch.tensor(self.std * (channels if len(self.std) == 1 else 1))
        return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    # ------------------------------------------------------------------ call
    def __call__(self, images: Sequence[Tensor], indices: Tensor | None = None) -> ViewBatch:
        """``n_views`` views of every image (``Tensor[C, H, W]`` in ``[0, 1]``, any sizes).

        Raises:
            ValueError: images with different channel counts.
        """
        if not images:
            raise ValueError("MultiViewAugment needs at least one image")
        channels = {int(im.shape[0]) for im in images}
        if len(channels) != 1:
            raise ValueError(f"images have different channel counts {sorted(channels)}")
        colour = torch.tensor([not is_grey(im) for im in images])
        views, thetas = [], []
        for _ in range(self.n_views):
            th = torch.stack([self.sample_theta(im) for im in images])  # (B, 2, 3)
            crops = torch.stack(
                [self._crop(im, t) for im, t in zip(images, th, strict=True)]
            )  # (B, C, S, S)
            views.append(self.normalise(self._intensity(crops, colour)))
            thetas.append(th)
        sizes = torch.tensor([[int(im.shape[-2]), int(im.shape[-1])] for im in images])
        idx = indices if indices is not None else torch.arange(len(images))
        return ViewBatch(views=views, thetas=thetas, sizes=sizes, indices=idx)


def augment_from_config(
    section: Mapping[str, Any], mean: Sequence[float], std: Sequence[float]
) -> MultiViewAugment:
    """The :class:`MultiViewAugment` of a ``pretrain.augment`` section.

    ``preset`` names an entry of :data:`PRESETS`; any other key that is not ``null`` overrides
    the preset's value.

    Raises:
        ValueError: unknown preset or key, or a value out of range (named with its value).
    """
    unknown = sorted(set(section) - set(AUGMENT_KEYS))
    if unknown:
        raise ValueError(
            f"unknown key pretrain.augment.{unknown[0]}; known: {', '.join(AUGMENT_KEYS)}"
        )
    preset = section.get("preset") or "microscopy"
    if preset not in PRESETS:
        raise ValueError(
            f"pretrain.augment.preset = {preset!r}: unknown; known: {', '.join(PRESETS)}"
        )
    kwargs: dict[str, Any] = dict(PRESETS[preset])
    for key, value in section.items():
        if key != "preset" and value is not None:
            kwargs[key] = value
    return MultiViewAugment(mean=mean, std=std, **kwargs)
