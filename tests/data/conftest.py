"""Helpers for data tests: tiny hand-made DSB-layout folders written with PIL."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def rect_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``(h, w)`` uint8 mask with 255 on rows ``y0..y1-1`` and columns ``x0..x1-1``."""
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


def write_sample(
    root: Path,
    sid: str,
    image: np.ndarray,
    masks: Sequence[np.ndarray] | None,
) -> Path:
    """Write ``<root>/<sid>/images/<sid>.png`` and, unless ``masks`` is None, ``masks/m<k>.png``."""
    (root / sid / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / sid / "images" / f"{sid}.png")
    if masks is not None:
        (root / sid / "masks").mkdir(parents=True, exist_ok=True)
        for k, m in enumerate(masks):
            Image.fromarray(m).save(root / sid / "masks" / f"m{k:03d}.png")
    return root / sid


class DsbTools:
    """Writers for tiny DSB-layout folders under one temporary folder."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.rect = rect_mask
        self.write_sample = write_sample

    def make(
        self,
        samples: dict[str, tuple[np.ndarray, Sequence[np.ndarray] | None]],
        name: str = "dsb",
    ) -> Path:
        """``{id: (image, masks or None)}`` -> the new root folder."""
        root = self.base / name
        root.mkdir()
        for sid, (image, masks) in samples.items():
            write_sample(root, sid, image, masks)
        return root


@pytest.fixture
def dsb_tools(tmp_path: Path) -> DsbTools:
    """Tiny DSB folder writers in ``tmp_path``."""
    return DsbTools(tmp_path)
