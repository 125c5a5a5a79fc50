"""``ssmd evaluate`` on LUNA16 CSVs, and ``ssmd predict`` / ``evaluate`` with a 3D checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ssmd.cli.main import main
from ssmd.config import load_config
from ssmd.evaluation.luna16 import read_submission, write_submission
from ssmd.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
from test_detection3d import TINY


def test_evaluate_luna16_csvs_hand_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = tmp_path / "annotations.csv"
    gt.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\na,0,0,0,10\na,50,0,0,4\nb,0,0,0,6\n")
    pred = tmp_path / "candidates.csv"
    write_submission(
        pred,
        {
            "a": [[1, 1, 1, 0.9], [2, 0, 0, 0.8], [51, 0, 0, 0.3], [100, 0, 0, 0.7]],
            "b": [[0, 0, 4, 0.6], [0, 0, 3, 0.5]],
            "c": [[30, 30, 30, 0.2]],  # a scan without nodules
        },
    )
    out = tmp_path / "m.json"
    args = ["evaluate", "--gt", str(gt), "--pred", str(pred), "--froc", "--out", str(out)]
    assert main([*args, "--bootstrap", "50"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["CPM"] == pytest.approx(5 / 7)  # tests/evaluation/test_luna16_eval.py
    assert metrics["CPM_lo"] <= metrics["CPM"] <= metrics["CPM_hi"]
    assert "3 scans (1 with candidates but no annotated nodule)" in capsys.readouterr().out


def _luna16_folder(root: Path) -> Path:
    """Two synthetic volumes written as LUNA16 ``.mhd`` scans, and their annotations.csv."""
    sitk = pytest.importorskip("SimpleITK")
    from ssmd.data.volumes.synthetic_ct import SyntheticCTConfig, generate_ct

    config = SyntheticCTConfig(fov_mm=48.0, diameter_mm=(4.0, 12.0), max_nodules=2)
    rows = ["seriesuid,coordX,coordY,coordZ,diameter_mm"]
    root.mkdir()
    for k in range(2):
        vol, nodules = generate_ct(config, 3, k)
        image = sitk.GetImageFromArray(vol.array.astype("int16"))
        image.SetSpacing(vol.spacing)
        image.SetOrigin((-20.0, 10.0, -300.0 + k))
        sitk.WriteImage(image, str(root / f"scan{k}.mhd"))
        for n in nodules:
            x, y, z = (
                c + o for c, o in zip(n.center_world, (-20.0, 10.0, -300.0 + k), strict=True)
            )
            rows.append(f"scan{k},{x},{y},{z},{n.diameter_mm}")
    csv = root / "annotations.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def test_predict_and_evaluate_a_3d_checkpoint(tmp_path: Path) -> None:
    annotations = _luna16_folder(tmp_path / "luna")
    cfg = load_config(
        None,
        [
            *TINY,
            f"output_dir={tmp_path / 'run'}",
            f"data.cache_dir={tmp_path / 'c'}",
            "train.max_iters=2",
        ],
    )
    get_task("detection3d").train(cfg, log=lambda _: None)
    ckpt = str(tmp_path / "run" / "best.pt")
    src = ["--format", "luna16", str(tmp_path / "luna"), "--annotations", str(annotations)]
    csv = tmp_path / "pred.csv"
    assert main(["predict", "--checkpoint", ckpt, *src, "--out", str(csv)]) == 0
    assert set(read_submission(csv)) <= {"scan0", "scan1"}
    out = tmp_path / "m.json"
    assert (
        main(["evaluate", "--checkpoint", ckpt, *src, "--bootstrap", "10", "--out", str(out)]) == 0
    )
    assert "CPM" in json.loads(out.read_text())
    own = tmp_path / "own.json"
    assert main(["evaluate", "--checkpoint", ckpt, "--out", str(own)]) == 0  # the run's test part
    assert "CPM" in json.loads(own.read_text())
