"""The synthetic chest-CT generator: seeded, cached, anatomy and nodules where they are said to be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssmd.data.volumes.luna16 import nodule_box
from ssmd.data.volumes.synthetic_ct import (
    NODULE_KINDS,
    NODULE_PLACES,
    SyntheticCTCache,
    SyntheticCTConfig,
    generate_ct,
    volume_geometry,
)
from ssmd.utils.errors import DataError

SMALL = SyntheticCTConfig(fov_mm=64.0, max_nodules=3, diameter_mm=(3.0, 20.0))


def test_same_seed_same_volume_other_seed_other_volume() -> None:
    a, na = generate_ct(SMALL, 0, 3)
    b, nb = generate_ct(SMALL, 0, 3)
    c, _ = generate_ct(SMALL, 1, 3)
    assert np.array_equal(a.array, b.array) and na == nb
    assert a.array.shape != c.array.shape or not np.array_equal(a.array, c.array)


def test_geometry_without_generating_matches_the_volume() -> None:
    for i in range(4):
        vol, _ = generate_ct(SMALL, 0, i)
        geom = volume_geometry(SMALL, 0, i)
        assert geom.size_xyz == vol.size_xyz
        assert geom.spacing == vol.spacing


def test_anatomy_air_lung_tissue_and_nodules_are_dense() -> None:
    vol, nodules = generate_ct(SMALL, 0, 1)
    hu = vol.array
    assert np.median(hu) < -600  # mostly lung
    assert (hu > -200).mean() > 0.05  # chest wall / vessels / tissue present
    for n in generate_ct(SMALL, 0, 5)[1] + nodules:
        assert n.kind in NODULE_KINDS and n.place in NODULE_PLACES
        assert 3.0 <= n.diameter_mm <= 20.0


def test_nodule_centres_are_brighter_than_lung_and_boxes_follow_luna16_rule() -> None:
    found = 0
    for i in range(12):
        vol, nodules = generate_ct(SMALL, 0, i)
        for n in nodules:
            found += 1
            ix = np.round(vol.world_to_voxel(n.center_world)).astype(int)  # (x, y, z)
            value = vol.array[ix[2], ix[1], ix[0]]
            assert value > -700, (i, n)  # ground glass is ~-550 HU, lung ~-850 HU
            assert n.box == nodule_box(vol.geometry, n.center_world, n.diameter_mm).box
    assert found >= 10


def test_spacing_varies_between_volumes() -> None:
    spacings = {volume_geometry(SMALL, 0, i).spacing for i in range(10)}
    assert len({s[2] for s in spacings}) >= 2 and len({s[0] for s in spacings}) >= 5


def test_cache_writes_then_reads_the_same_volume(tmp_path: Path) -> None:
    cache = SyntheticCTCache(SMALL, 0, tmp_path)
    first, n1 = cache.volume(2)
    files = sorted(p.name for p in cache.folder.iterdir())  # type: ignore[union-attr]
    assert files == ["00002.json", "00002.npz"]
    second, n2 = cache.volume(2)
    assert np.array_equal(first.array, second.array) and n1 == n2
    assert cache.nodules(2) == n1
    # another config gets another folder (no stale volumes)
    other = SyntheticCTCache(SyntheticCTConfig(fov_mm=70.0), 0, tmp_path)
    assert other.folder != cache.folder


def test_bad_cached_record_names_file_and_field(tmp_path: Path) -> None:
    cache = SyntheticCTCache(SMALL, 0, tmp_path)
    cache.volume(0)
    meta = cache.folder / "00000.json"  # type: ignore[operator]
    meta.write_text('[{"center_world": [1, 2, 3]}]')
    with pytest.raises(DataError, match=r"00000\.json.*\[0\]"):
        cache.nodules(0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("spacing_xy", (1.0, 0.5)), ("diameter_mm", (3.0, 40.0)), ("kind_weights", (0.0, 0.0, 0.0))],
)
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(DataError, match=field):
        SyntheticCTConfig(fov_mm=64.0, **{field: value})  # type: ignore[arg-type]
