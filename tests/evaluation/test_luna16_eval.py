"""LUNA16 evaluation: sphere hit rule, CPM on a hand-made case, bootstrap CIs, submission CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssmd.data.volumes.luna16 import nodule_box
from ssmd.data.volumes.volume import VolumeGeometry
from ssmd.evaluation.froc import DEFAULT_FP_RATES, FP, IGNORED, TP
from ssmd.evaluation.luna16 import (
    detections_to_candidates,
    luna16_froc,
    luna16_match,
    read_submission,
    write_submission,
)
from ssmd.utils.errors import DataError

NODULES = {
    "a": [[0.0, 0, 0, 10], [50.0, 0, 0, 4]],
    "b": [[0.0, 0, 0, 6]],
    "c": [],  # a scan without nodules: FPs only
}
CANDIDATES = {
    "a": [
        [1.0, 1, 1, 0.9],  # TP nodule a0 (distance 1.7 <= 5)
        [2.0, 0, 0, 0.8],  # a0 again: ignored
        [51.0, 0, 0, 0.3],  # TP a1 (distance 1 <= 2)
        [100.0, 0, 0, 0.7],  # FP
    ],
    "b": [
        [0.0, 0, 4, 0.6],  # distance 4 > radius 3: FP
        [0.0, 0, 3, 0.5],  # distance 3 = radius: TP (edge included)
    ],
    "c": [[30.0, 30, 30, 0.2]],  # FP
}


def test_hand_case_statuses_and_cpm() -> None:
    m = luna16_match(NODULES, CANDIDATES)
    assert m.status.tolist() == [TP, IGNORED, TP, FP, FP, TP, FP]
    assert m.lesion_scores.tolist() == [0.9, 0.3, 0.5]
    r = luna16_froc(NODULES, CANDIDATES).froc
    # counted by score: .9 TP, .7 FP, .6 FP, .5 TP, .3 TP, .2 FP over 3 scans, 3 nodules
    assert np.allclose(r.fps_per_image, [0, 0, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1])
    assert np.allclose(r.sensitivity, [0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    # np.interp: 1/8 and 1/4 between (0, 1/3) and (1/3, 1/3); 1/2 likewise; >= 2/3 -> 1
    expected = [1 / 3, 1 / 3, 1 / 3, 1.0, 1.0, 1.0, 1.0]
    assert [r.sensitivities[k] for k in DEFAULT_FP_RATES] == pytest.approx(expected)
    assert r.cpm == pytest.approx(sum(expected) / 7)


def _reference_froc(nodules: dict, candidates: dict, rates: tuple[float, ...]) -> list[float]:
    """LUNA16's definition, brute force: at each threshold, found nodules and FPs."""
    scans = list(nodules)
    probs = sorted({c[3] for u in scans for c in candidates.get(u, [])}, reverse=True)
    fps, sens = [0.0], [0.0]
    total = sum(len(nodules[u]) for u in scans)
    for t in probs:
        found = fp = 0
        for u in scans:
            cand = [c for c in candidates.get(u, []) if c[3] >= t]
            for n in nodules[u]:
                found += any(np.linalg.norm(np.subtract(c[:3], n[:3])) <= n[3] / 2 for c in cand)
            fp += sum(
                all(np.linalg.norm(np.subtract(c[:3], n[:3])) > n[3] / 2 for n in nodules[u])
                for c in cand
            )
        fps.append(fp / len(scans))
        sens.append(found / total)
    return list(np.interp(rates, fps, sens))


def test_agrees_with_a_brute_force_luna16_reference() -> None:
    rng = np.random.default_rng(0)
    nodules, candidates = {}, {}
    for k in range(8):
        n = int(rng.integers(0, 4))
        centres = rng.uniform(0, 200, (n, 3))
        centres[:, 0] += np.arange(n) * 300  # far apart: spheres never overlap
        nodules[f"s{k}"] = [[*c, float(rng.uniform(4, 20))] for c in centres]
        rows = []
        for c in centres:
            for _ in range(int(rng.integers(0, 3))):
                rows.append([*(c + rng.normal(0, 4, 3)), float(rng.random())])
        for _ in range(int(rng.integers(0, 6))):
            rows.append([*rng.uniform(0, 1000, 3), float(rng.random())])
        candidates[f"s{k}"] = rows
    ours = luna16_froc(nodules, candidates).froc
    ref = _reference_froc(nodules, candidates, DEFAULT_FP_RATES)
    assert [ours.sensitivities[r] for r in DEFAULT_FP_RATES] == pytest.approx(ref)


def test_bootstrap_ci_brackets_and_is_seeded() -> None:
    a = luna16_froc(NODULES, CANDIDATES, n_boot=200, seed=1)
    b = luna16_froc(NODULES, CANDIDATES, n_boot=200, seed=1)
    assert a.ci == b.ci and 0 < a.n_boot <= 200
    lo, hi = a.ci["CPM"]
    assert 0.0 <= lo <= hi <= 1.0 and lo < hi
    d = a.to_dict()
    assert d["CPM_lo"] == lo and d["CPM"] == pytest.approx(a.froc.cpm)


def test_bad_input_is_named() -> None:
    with pytest.raises(DataError, match="seriesuid"):
        luna16_match(NODULES, {**CANDIDATES, "zz": [[0.0, 0, 0, 0.5]]})
    with pytest.raises(DataError, match="diameter"):
        luna16_match({"a": [[0.0, 0, 0, 0]]}, {})
    with pytest.raises(ValueError, match="0 GT lesions"):
        luna16_froc({"c": []}, {"c": [[0.0, 0, 0, 0.5]]})


def test_submission_csv_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "candidates.csv"
    assert write_submission(path, CANDIDATES) == 7
    assert path.read_text().splitlines()[0] == "seriesuid,coordX,coordY,coordZ,probability"
    back = read_submission(path)
    assert list(back) == ["a", "b", "c"]
    assert np.array_equal(back["a"], np.asarray(CANDIDATES["a"]))
    bad = tmp_path / "bad.csv"
    bad.write_text("seriesuid,coordX,coordY,coordZ,probability\na,1,2,x,0.5\n")
    with pytest.raises(DataError, match=r"bad\.csv.*line 2: coordZ.*'x'"):
        read_submission(bad)
    bad.write_text("seriesuid,coordX,coordY,coordZ\na,1,2,3\n")
    with pytest.raises(DataError, match="probability"):
        read_submission(bad)


def test_voxel_boxes_to_world_candidates_invert_nodule_box() -> None:
    geom = VolumeGeometry((64, 64, 40), (0.7, 0.7, 2.5), origin=(-100.0, 50.0, -300.0))
    centre = (-80.0, 70.0, -250.0)
    box = nodule_box(geom, centre, 8.0).box
    rows = detections_to_candidates(geom, [box], [0.75])
    assert rows.shape == (1, 4)
    assert np.allclose(rows[0, :3], centre) and rows[0, 3] == 0.75
    # hand value: voxel (0, 0, 0) spans box [0, 1); its centre is the origin
    assert np.allclose(
        detections_to_candidates(geom, [[0, 0, 0, 1, 1, 1]], [1.0])[0, :3], geom.origin
    )
