"""LUNA16 evaluation: the sphere hit rule, FROC / CPM per scan with bootstrap CIs, submission CSVs.

**Hit rule** (LUNA16's ``noduleCADEvaluation``): a candidate -- a point in world mm with a
probability -- hits a nodule when its distance to the nodule's centre is at most the
nodule's radius (``diameter_mm / 2``). Candidates are visited by probability, highest first
(stable): the first candidate to hit a nodule detects it (the nearest one when it hits
several free nodules) and is a TP; a candidate whose every hit nodule is already detected is
ignored (LUNA16 drops the other candidates of a found nodule); a candidate that hits no
nodule is an FP. One candidate detects at most one nodule -- the only departure from the
LUNA16 script, which lets a candidate inside two overlapping nodule spheres count for both
(nodules closer than their radii do not occur in LUNA16's annotations, which merge them).
Matching, the curve and its interpolation are :mod:`ssmd.evaluation.froc`'s
(:func:`~ssmd.evaluation.froc.froc_result`): sensitivity at ``1/8, 1/4, 1/2, 1, 2, 4, 8``
average FPs per scan and their mean, the CPM.

**Bootstrap** (``computeFROC_bootstrap`` of the LUNA16 script): scans are resampled with
replacement ``n_boot`` times; each resample gives a curve, sensitivities and a CPM; the
confidence interval of each is the ``(1 - c) / 2`` and ``(1 + c) / 2`` percentiles over the
resamples (95 % by default), the script's rule.

**Submission CSV**: ``seriesuid,coordX,coordY,coordZ,probability`` -- one row per candidate,
world LPS mm (:func:`write_submission`, :func:`read_submission`, which names the file, line
and field of a bad value). :func:`detections_to_candidates` turns a detector's ``xyxy`` voxel
boxes ``(x1, y1, z1, x2, y2, z2)`` into world centres through the scan's geometry (the inverse
of :func:`~ssmd.data.volumes.luna16.nodule_box`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssmd.data.volumes.luna16 import voxel_box_to_world
from ssmd.data.volumes.volume import Volume, VolumeGeometry
from ssmd.evaluation.froc import (
    DEFAULT_FP_RATES,
    FP,
    IGNORED,
    TP,
    FROCMatch,
    FROCResult,
    froc_result,
)
from ssmd.utils.errors import DataError

__all__ = [
    "SUBMISSION_COLUMNS",
    "Luna16Result",
    "detections_to_candidates",
    "luna16_froc",
    "luna16_match",
    "read_submission",
    "write_submission",
]

SUBMISSION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "probability")
"""Columns of a LUNA16 submission (candidates) file."""

_ARGS = "<luna16 arguments>"


@dataclass(frozen=True)
class _Scan:
    nodules: np.ndarray  # (N, 4) x, y, z, diameter
    candidates: np.ndarray  # (P, 4) x, y, z, probability


@dataclass(frozen=True)
class Luna16Result:
    """FROC of a LUNA16-style evaluation and its bootstrap confidence intervals.

    Attributes:
        froc: the curve, sensitivities and CPM on all scans.
        ci: ``{"sensitivity@<rate>": (lo, hi), ..., "CPM": (lo, hi)}`` (empty without bootstrap).
        n_boot: bootstrap resamples drawn (0: none).
        confidence: CI level.
    """

    froc: FROCResult
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_boot: int = 0
    confidence: float = 0.95

    def to_dict(self) -> dict[str, float]:
        """The sensitivities and CPM, plus ``<name>_lo`` / ``<name>_hi`` for each CI."""
        out = self.froc.to_dict()
        for name, (lo, hi) in self.ci.items():
            out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
        return out


def _rows(value: Any, width: int, what: str) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, width))
    if a.ndim != 2 or a.shape[1] != width or not np.isfinite(a).all():
        raise DataError(
            _ARGS, what, a.tolist() if a.size < 20 else a.shape, f"need finite (N, {width}) rows"
        )
    return a


def _scans(
    nodules: Mapping[str, Any], candidates: Mapping[str, Any]
) -> tuple[list[str], list[_Scan]]:
    unknown = sorted(set(candidates) - set(nodules))
    if unknown:
        raise DataError(
            _ARGS,
            "candidates seriesuid",
            unknown[:3],
            "not a scan of the evaluation (no nodule list)",
        )
    uids = list(nodules)
    scans = []
    for uid in uids:
        nod = _rows(nodules[uid], 4, f"nodules[{uid!r}]")
        if (nod[:, 3] <= 0).any():
            raise DataError(
                _ARGS, f"nodules[{uid!r}] diameter_mm", nod[nod[:, 3] <= 0, 3][0], "must be > 0"
            )
        scans.append(_Scan(nod, _rows(candidates.get(uid, []), 4, f"candidates[{uid!r}]")))
    return uids, scans


def _match_scan(scan: _Scan) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching in one scan (module docstring) -> ``(status (P,), lesion scores (N,))``."""
    cand, nod = scan.candidates, scan.nodules
    status = np.full(cand.shape[0], FP, dtype=np.int8)
    found = np.full(nod.shape[0], np.nan)
    if cand.shape[0] == 0 or nod.shape[0] == 0:
        return status, found
    dist = np.linalg.norm(cand[:, None, :3] - nod[None, :, :3], axis=-1)  # (P, N)
    hits = dist <= nod[None, :, 3] / 2.0
    detected = np.zeros(nod.shape[0], dtype=bool)
    for i in np.argsort(-cand[:, 3], kind="mergesort"):
        if not hits[i].any():
            continue
        free = hits[i] & ~detected
        if not free.any():
            status[i] = IGNORED
            continue
        j = int(np.argmin(np.where(free, dist[i], np.inf)))
        detected[j] = True
        found[j] = cand[i, 3]
        status[i] = TP
    return status, found


def _pooled(scans: Sequence[_Scan], matched: Sequence[tuple[np.ndarray, np.ndarray]]) -> FROCMatch:
    return FROCMatch(
        scores=np.concatenate([s.candidates[:, 3] for s in scans]) if scans else np.zeros(0),
        status=np.concatenate([m[0] for m in matched]) if scans else np.zeros(0, np.int8),
        image_index=np.concatenate(
            [np.full(s.candidates.shape[0], k, dtype=np.int64) for k, s in enumerate(scans)]
        )
        if scans
        else np.zeros(0, np.int64),
        lesion_scores=np.concatenate([m[1] for m in matched]) if scans else np.zeros(0),
        num_images=len(scans),
    )


def luna16_match(nodules: Mapping[str, Any], candidates: Mapping[str, Any]) -> FROCMatch:
    """Match candidates to nodules scan by scan with the sphere rule (module docstring).

    Args:
        nodules: seriesuid -> ``(N, 4)`` rows ``(coordX, coordY, coordZ, diameter_mm)``; every
            key is a scan of the evaluation (``N = 0`` valid: it adds FPs only).
        candidates: seriesuid -> ``(P, 4)`` rows ``(coordX, coordY, coordZ, probability)``;
            a scan without candidates may be absent.

    Raises:
        DataError: a candidate for a scan not in ``nodules``, a non-finite value, a bad shape
            or a diameter that is not > 0.
    """
    _, scans = _scans(nodules, candidates)
    return _pooled(scans, [_match_scan(s) for s in scans])


def luna16_froc(
    nodules: Mapping[str, Any],
    candidates: Mapping[str, Any],
    fp_rates: Iterable[float] = DEFAULT_FP_RATES,
    n_boot: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
) -> Luna16Result:
    """LUNA16 FROC, CPM and (``n_boot > 0``) bootstrap CIs over scans (module docstring).

    Args:
        nodules: see :func:`luna16_match`.
        candidates: see :func:`luna16_match`.
        fp_rates: average FPs per scan to read sensitivity at.
        n_boot: bootstrap resamples (LUNA16's script: 1000); 0 for none.
        confidence: CI level.
        seed: resampling seed.

    Raises:
        ValueError: no nodule at all.
        DataError: see :func:`luna16_match`.
    """
    rates = tuple(float(r) for r in fp_rates)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence = {confidence}: need a level in (0, 1)")
    _, scans = _scans(nodules, candidates)
    matched = [_match_scan(s) for s in scans]
    result = froc_result(_pooled(scans, matched), rates)
    if n_boot <= 0:
        return Luna16Result(result, n_boot=0, confidence=confidence)
    rng = np.random.default_rng(seed)
    names = [f"sensitivity@{r:g}" for r in rates] + ["CPM"]
    values: list[list[float]] = []
    n = len(scans)
    for _ in range(int(n_boot)):
        pick = rng.integers(0, n, size=n)
        sub_scans = [scans[k] for k in pick]
        if sum(s.nodules.shape[0] for s in sub_scans) == 0:
            continue  # sensitivity undefined for a resample without nodules
        boot = froc_result(_pooled(sub_scans, [matched[k] for k in pick]), rates)
        values.append([boot.sensitivities[r] for r in rates] + [boot.cpm])
    a = np.asarray(values)  # (B', R + 1)
    lo_q, hi_q = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
    ci = {
        name: (float(np.percentile(a[:, k], lo_q)), float(np.percentile(a[:, k], hi_q)))
        for k, name in enumerate(names)
    }
    return Luna16Result(result, ci=ci, n_boot=len(values), confidence=confidence)


def detections_to_candidates(
    geometry: Volume | VolumeGeometry, boxes: Any, scores: Any
) -> np.ndarray:
    """``(P, 4)`` rows ``(coordX, coordY, coordZ, probability)`` of ``xyxy`` voxel boxes.

    The centre of box ``(x1, y1, z1, x2, y2, z2)`` is continuous index ``(x1 + x2) / 2 - 0.5``
    (voxel ``i`` spans ``[i, i + 1)`` in box coordinates), mapped to world mm by the scan's
    origin, spacing and direction.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if b.shape[0] != s.shape[0]:
        raise DataError(_ARGS, "scores", s.shape[0], f"need one score per box ({b.shape[0]})")
    if b.shape[0] == 0:
        return np.zeros((0, 4))
    centres, _ = voxel_box_to_world(geometry, b)
    return np.concatenate([centres, s[:, None]], axis=1)


def write_submission(path: str | Path, candidates: Mapping[str, Any]) -> int:
    """Write a LUNA16 submission CSV; returns the number of rows.

    Args:
        path: the ``.csv`` to write (its folder is created).
        candidates: seriesuid -> ``(P, 4)`` rows ``(coordX, coordY, coordZ, probability)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(SUBMISSION_COLUMNS)
        for uid, rows in candidates.items():
            for x, y, z, p in _rows(rows, 4, f"candidates[{uid!r}]"):
                writer.writerow(
                    [uid, repr(float(x)), repr(float(y)), repr(float(z)), repr(float(p))]
                )
                n += 1
    return n


def read_submission(path: str | Path) -> dict[str, np.ndarray]:
    """Read a LUNA16 submission CSV into seriesuid -> ``(P, 4)`` rows (file order kept).

    Raises:
        DataError: missing file or column, an empty seriesuid, or a value that is not a finite
            number (the message names the file, line and column).
    """
    path = Path(path)
    try:
        fh = path.open(newline="", encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(path, "file", str(path), "does not exist") from exc
    out: dict[str, list[list[float]]] = {}
    with fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        missing = [c for c in SUBMISSION_COLUMNS if c not in cols]
        if missing:
            raise DataError(path, "columns", cols, f"missing LUNA16 submission column(s) {missing}")
        for row in reader:
            line = reader.line_num
            uid = (row["seriesuid"] or "").strip()
            if not uid:
                raise DataError(path, f"line {line}: seriesuid", row["seriesuid"], "empty")
            vals = []
            for c in SUBMISSION_COLUMNS[1:]:
                try:
                    v = float(row[c])
                except (TypeError, ValueError):
                    raise DataError(path, f"line {line}: {c}", row[c], "not a number") from None
                if not math.isfinite(v):
                    raise DataError(path, f"line {line}: {c}", row[c], "not finite")
                vals.append(v)
            out.setdefault(uid, []).append(vals)
    return {k: np.asarray(v, dtype=np.float64).reshape(-1, 4) for k, v in out.items()}
