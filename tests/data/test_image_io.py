"""read_image: modes, bit depths and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssmd.data.io import atomic_write_json, read_image, to_rgb_float
from ssmd.utils.errors import DataError


def test_palette_and_la_images(tmp_path: Path) -> None:
    p = tmp_path / "p.png"
    im = Image.new("P", (3, 2))
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.save(p)
    t = read_image(p)
    assert t.shape == (3, 2, 3) and t[:, 0, 1].tolist() == [1.0, 0.0, 0.0]
    la = tmp_path / "la.png"
    Image.fromarray(
        np.stack([np.full((2, 2), 51, np.uint8), np.zeros((2, 2), np.uint8)], -1), "LA"
    ).save(la)
    assert torch.allclose(read_image(la), torch.full((3, 2, 2), 0.2))


def test_value_checks_name_the_source() -> None:
    with pytest.raises(DataError, match=r"x\.tif.*image\.values"):
        to_rgb_float(np.full((2, 2), 1.5, np.float32), "x.tif")
    with pytest.raises(DataError, match=r"y\.tif.*image\.dtype"):
        to_rgb_float(np.zeros((2, 2), np.int64), "y.tif")
    with pytest.raises(DataError, match=r"z\.tif.*image\.shape"):
        to_rgb_float(np.zeros((2, 2, 5), np.uint8), "z.tif")
    assert to_rgb_float(np.full((1, 1), 65535, np.int32)).tolist() == [[[1.0]], [[1.0]], [[1.0]]]


def test_missing_file_and_atomic_json(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    atomic_write_json(tmp_path / "d" / "a.json", {"a": 1})
    assert (tmp_path / "d" / "a.json").read_text() == '{"a": 1}'
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["a.json"]  # no temp file left
