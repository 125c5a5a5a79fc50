"""``ssmd data check``, and the same check up front in ``ssmd data convert`` / ``ssmd train``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssmd.cli.main import main


def _dsb(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for k in range(n):
        sid = f"s{k}"
        (root / sid / "images").mkdir(parents=True)
        (root / sid / "masks").mkdir()
        img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / sid / "images" / f"{sid}.png")
        m = np.zeros((64, 64), np.uint8)
        m[4 + k : 40 + k, 8:50] = 255 * rng.integers(
            0, 2, (36, 42), dtype=np.uint8
        )  # binary, > 200 bytes
        Image.fromarray(m).save(root / sid / "masks" / "m0.png")
    return root


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 200  # the cut must remove pixel data
    path.write_bytes(data[:200])


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSMD_CACHE_DIR", str(tmp_path / "cache"))


def test_data_check_passes_then_fails_on_a_truncated_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _dsb(tmp_path / "dsb")
    assert main(["data", "check", "--format", "dsb2018", str(root)]) == 0
    out = capsys.readouterr().out
    assert "3 images, 3 masks" in out and "nucleus: 3 objects in 3 images" in out and "OK" in out
    bad = root / "s1" / "images" / "s1.png"
    _truncate(bad)
    assert main(["data", "check", "--format", "dsb2018", str(root), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    errors = [f for f in rep["findings"] if f["level"] == "error"]
    assert rep["errors"] == 1 and errors[0]["path"] == str(bad) and rep["warnings"] == 0
    assert rep["decoded"] == 1 and rep["cached"] == 5  # only the changed file was decoded


def test_convert_fails_up_front_naming_the_truncated_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _dsb(tmp_path / "dsb")
    _truncate(root / "s2" / "images" / "s2.png")
    out = tmp_path / "gt.json"
    assert main(["data", "convert", "--format", "dsb2018", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "s2.png" in err and "'image'" in err and "cannot decode" in err
    assert not out.exists()


def test_train_fails_before_the_first_step_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _dsb(tmp_path / "dsb", n=4)
    _truncate(root / "s0" / "masks" / "m0.png")
    rc = main(
        [
            "train",
            "data.format=dsb2018",
            f"data.root={root}",
            f"output_dir={tmp_path / 'run'}",
            "train.max_iters=2",
            "train.progress=false",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "s0/masks/m0.png" in err and "train: data check of 4 images" in err
    assert not (tmp_path / "run" / "last.pt").exists()
