"""Grad-CAM (Selvaraju et al., ICCV 2017) heatmaps of a classifier, saved as PNG overlays.

For a class ``c`` with logit ``y_c`` and the last feature map ``A`` (``Tensor[B, C, h, w]``,
:meth:`ssmd.models.classifiers.Classifier.forward_maps`):
``alpha_k = mean_{ij} dy_c / dA_kij`` and ``L = ReLU(sum_k alpha_k A_k)``, bilinearly upsampled to
the image and scaled to ``[0, 1]`` per image (an all-zero map stays zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image
from torch import Tensor

from ssmd.models.classifiers import Classifier

__all__ = ["grad_cam", "overlay_heatmap", "write_gradcam_overlays"]


def grad_cam(model: Classifier, images: Tensor, target: Tensor | None = None) -> Tensor:
    """Grad-CAM maps ``Tensor[B, H, W]`` in ``[0, 1]`` for ``images`` ``Tensor[B, C, H, W]``.

    Args:
        model: the classifier (put in eval mode here; its mode is restored).
        images: normalised input batch.
        target: class per image ``LongTensor[B]`` (default: the predicted class).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = images.detach().requires_grad_(False)
            logits, _, fmap = model.forward_maps(x)  # (B, K), (B, C), (B, C, h, w)
            cls = logits.argmax(dim=1) if target is None else target.to(logits.device)
            score = logits.gather(1, cls.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, fmap)  # (B, C, h, w)
        weights = grads.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        cam = torch.relu((weights * fmap.detach()).sum(dim=1, keepdim=True))  # (B, 1, h, w)
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
        cam = cam[:, 0]  # (B, H, W)
        peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12).view(-1, 1, 1)
        return (cam / peak).clamp(0, 1)
    finally:
        model.train(was_training)


def overlay_heatmap(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a ``[0, 1]`` heatmap ``(H, W)`` (jet colours) over an image ``(H, W, C)`` in ``[0, 1]``.

    Returns:
        ``uint8`` RGB ``(H, W, 3)``.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    heat = colormaps["jet"](np.clip(cam, 0, 1))[:, :, :3]  # (H, W, 3)
    out = (1 - alpha) * np.clip(img, 0, 1) + alpha * heat
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def write_gradcam_overlays(
    model: Classifier,
    images: Tensor,
    normalized: Tensor,
    names: Sequence[str],
    folder: str | Path,
    scale: int = 4,
) -> list[Path]:
    """Write ``<name>.png``: the image and its Grad-CAM overlay side by side.

    Args:
        model: the classifier.
        images: the images in ``[0, 1]``, ``Tensor[B, C, H, W]`` (for display).
        normalized: the same images as the model sees them.
        names: file stems.
        folder: output folder (created).
        scale: nearest-neighbour upscaling of small images (28 px) for viewing.

    Returns:
        The written paths.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    cams = grad_cam(model, normalized).cpu().numpy()
    paths = []
    for img, cam, name in zip(images.cpu().numpy(), cams, names, strict=True):
        rgb = img.transpose(1, 2, 0)  # (H, W, C)
        base = overlay_heatmap(rgb, np.zeros_like(cam), alpha=0.0)
        over = overlay_heatmap(rgb, cam)
        pair = np.concatenate([base, over], axis=1)  # (H, 2W, 3)
        pil = Image.fromarray(pair)
        if scale > 1:
            pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
        path = out / f"{name}.png"
        pil.save(path)
        paths.append(path)
    return paths
