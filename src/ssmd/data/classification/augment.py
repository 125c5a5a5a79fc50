"""Batched random perturbations of classification images — the ``eta`` / ``eta'`` of Eq. (1).

Every image of a batch gets its own draw, from a ``torch.Generator`` owned by the caller (so a
resumed run redraws exactly): horizontal / vertical flips, a multiple of 90 degrees, a
translation by up to ``translate`` pixels (reflect padding, then a random crop) and additive
Gaussian noise of std ``noise`` (on normalised intensities), clipped at ``2 * noise`` as in the
Mean Teacher reference code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BatchAugment"]


@dataclass
class BatchAugment:
    """Per-image random flips, 90-degree rotations, translation and Gaussian noise.

    Attributes:
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        rot90: rotate by a random multiple of 90 degrees (square images; dermoscopy has no
            canonical orientation, chest X-rays have one: keep it off there).
        translate: maximum shift in pixels.
        noise: std of additive Gaussian noise (0: none).
    """

    hflip: float = 0.5
    vflip: float = 0.0
    rot90: bool = False
    translate: int = 0
    noise: float = 0.0

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Perturb ``x``, ``Tensor[B, C, H, W]``; returns a new tensor of the same shape."""
        b, _, h, w = x.shape
        out = x.clone()
        if b == 0:
            return out
        if self.hflip > 0:
            flip = torch.rand(b, generator=generator) < self.hflip
            out[flip] = out[flip].flip(3)
        if self.vflip > 0:
            flip = torch.rand(b, generator=generator) < self.vflip
            out[flip] = out[flip].flip(2)
        if self.rot90 and h == w:
            turns = torch.randint(0, 4, (b,), generator=generator)
            for k in (1, 2, 3):
                sel = turns == k
                if bool(sel.any()):
                    out[sel] = torch.rot90(out[sel], k, dims=(2, 3))
        if self.translate > 0:
            t = int(self.translate)
            padded = F.pad(out, (t, t, t, t), mode="reflect")  # (B, C, H + 2t, W + 2t)
            dy = torch.randint(0, 2 * t + 1, (b,), generator=generator).tolist()
            dx = torch.randint(0, 2 * t + 1, (b,), generator=generator).tolist()
            out = torch.stack(
                [padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)]
            )  # (B, C, H, W)
        if self.noise > 0:
            eps = torch.randn(out.shape, generator=generator) * self.noise
            out = out + eps.clamp(-2 * self.noise, 2 * self.noise)
        return out
