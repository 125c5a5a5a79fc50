"""A generated classification set, so the demo and the tests need no external data.

Each class ``k`` owns a bright Gaussian blob at a class-specific place; images add a dimmer
distractor blob at a random place and pixel noise, so the task is learnable but not trivial.
Single-label: one class blob per image. Multi-label: each class blob is present independently
with probability 0.35.
"""

from __future__ import annotations

import numpy as np

from ssmd.data.classification.base import ClassificationDataset

__all__ = ["make_synthetic_classification"]


def make_synthetic_classification(
    n_images: int = 600,
    image_size: int = 32,
    num_classes: int = 3,
    multi_label: bool = False,
    channels: int = 1,
    noise: float = 0.25,
    seed: int = 0,
) -> ClassificationDataset:
    """Draw the synthetic set (deterministic in ``seed``)."""
    if n_images < 1 or image_size < 8 or num_classes < 2:
        raise ValueError(
            f"synthetic classification needs n_images >= 1, image_size >= 8, num_classes >= 2; "
            f"got {n_images}, {image_size}, {num_classes}"
        )
    rng = np.random.default_rng(seed)
    s = image_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    angles = 2 * np.pi * np.arange(num_classes) / num_classes
    centres = np.stack([0.5 + 0.28 * np.cos(angles), 0.5 + 0.28 * np.sin(angles)], 1) * s
    sigma = s / 10.0
    labels = np.zeros((n_images, num_classes), np.float32)
    if multi_label:
        labels[:] = rng.random((n_images, num_classes)) < 0.35
    else:
        labels[np.arange(n_images), rng.integers(0, num_classes, n_images)] = 1.0
    images = np.zeros((n_images, s, s, channels), np.uint8)
    for i in range(n_images):
        img = rng.normal(0.2, noise, (s, s)).astype(np.float32)
        for k in np.flatnonzero(labels[i]):
            cy, cx = centres[k] + rng.normal(0, s / 20, 2)
            img += 0.8 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        cy, cx = rng.uniform(0.2 * s, 0.8 * s, 2)
        img += 0.45 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        img = np.clip(img, 0, 1) * 255
        images[i] = img.astype(np.uint8)[:, :, None]
    ids = [f"syn_{i:05d}" for i in range(n_images)]
    names = [f"class{k}" for k in range(num_classes)]
    return ClassificationDataset(
        images, labels, ids, names, multi_label, source=f"<synthetic seed={seed}>"
    )
