"""LUNA16 rows -> voxel boxes: hand-computed cubes, outside/clipped rules, CSV errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssmd.data.volumes import (
    VolumeGeometry,
    nodule_box,
    read_luna16_annotations,
    voxel_box_to_world,
)
from ssmd.utils.errors import DataError

GEOM = VolumeGeometry(size=(10, 10, 10), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))


def test_nodule_cube_by_hand() -> None:
    nb = nodule_box(GEOM, (4.0, 5.0, 6.0), 4.0)
    assert nb.center_voxel == (4.0, 5.0, 3.0)  # z: 6 mm / 2 mm
    # voxel centre k sits at box coordinate k + 0.5; half sizes 2, 2, 1 voxels
    assert nb.box == (2.5, 3.5, 2.5, 6.5, 7.5, 4.5)
    assert nb.inside and not nb.clipped
    centres, sizes = voxel_box_to_world(GEOM, np.asarray(nb.box))
    np.testing.assert_allclose(centres, [[4.0, 5.0, 6.0]])
    np.testing.assert_allclose(sizes, [[4.0, 4.0, 4.0]])


def test_outside_and_clipped_rules() -> None:
    assert not nodule_box(GEOM, (-1.0, 5.0, 5.0), 3.0).inside  # voxel x = -1
    assert nodule_box(GEOM, (-0.5, 5.0, 5.0), 3.0).inside  # the edge of voxel 0
    assert not nodule_box(GEOM, (9.5, 5.0, 5.0), 3.0).inside  # past the edge of voxel 9
    nb = nodule_box(GEOM, (0.0, 5.0, 5.0), 4.0)
    assert nb.inside and nb.clipped
    assert nb.box[0] == 0.0 and nb.box[3] == 2.5  # [-1.5, 2.5] clipped to [0, 2.5]


def test_a_rotated_volume_is_refused() -> None:
    c = np.cos(0.3)
    s = np.sin(0.3)
    g = VolumeGeometry((4, 4, 4), (1.0, 1.0, 1.0), direction=[[c, -s, 0], [s, c, 0], [0, 0, 1]])
    with pytest.raises(DataError, match="aligned with the world axes"):
        nodule_box(g, (0.0, 0.0, 0.0), 5.0)


def _csv(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "annotations.csv"
    p.write_text(text)
    return p


def test_csv_errors_name_line_and_column(tmp_path: Path) -> None:
    head = "seriesuid,coordX,coordY,coordZ,diameter_mm\n"
    rows = read_luna16_annotations(_csv(tmp_path, head + "1.2,1,2,3,4.5\n"))
    assert rows[0].center_world == (1.0, 2.0, 3.0) and rows[0].line == 2
    with pytest.raises(DataError, match="not a number") as e:
        read_luna16_annotations(_csv(tmp_path, head + "1.2,1,2,3,4\n1.3,x,2,3,4\n"))
    assert e.value.field == "line 3: coordX"
    with pytest.raises(DataError, match="must be > 0"):
        read_luna16_annotations(_csv(tmp_path, head + "1.2,1,2,3,0\n"))
    with pytest.raises(DataError, match="empty"):
        read_luna16_annotations(_csv(tmp_path, head + ",1,2,3,4\n"))
    with pytest.raises(DataError, match=r"candidates\.csv"):
        read_luna16_annotations(_csv(tmp_path, "seriesuid,coordX,coordY,coordZ,class\n"))
    with pytest.raises(DataError, match="does not exist"):
        read_luna16_annotations(tmp_path / "none.csv")
