"""Data checks that find bad files before training: ``ssmd data check`` (issue 23).

Building a dataset reads headers only (sizes, names), so a truncated PNG passes ``ssmd data
convert`` and fails hours into training. :func:`check_dataset` decodes **every** image and
mask fully and reports, per file, with the file, field and value:

errors (``ssmd data check`` exits non-zero)
    an image or mask that cannot be decoded (truncated, corrupt, missing); an unsupported
    pixel type or shape; integer images outside ``0..65535`` or float images outside
    ``[0, 1]``; a decoded size other than the record's (e.g. a COCO ``width`` that does not
    match the file); a mask of another size than its image; any error the format's own
    annotation reader raises (a DSB mask with no nucleus pixel, an out-of-image box, ...).
warnings (reported, exit 0)
    constant (blank) images; all-background masks of images with objects (an image the format
    reads as empty, e.g. BUSI normal, is counted once among the labeled images without objects);
    masks with more than one nonzero value; labeled images without objects; categories
    without objects or more than :data:`IMBALANCE_RATIO` times rarer than the most frequent
    one; pixel-identical and near-identical images (:mod:`ssmd.data.duplicates`: they leak
    across a split).

**Cache.** The result of decoding a file is kept in a small JSON file keyed by the file's
absolute path, size and modification time (:class:`FileCheckCache`); a re-run decodes only
the files that changed. ``ssmd data convert`` and ``ssmd train`` run the same checks up front
through the cache, so the second run costs the ``stat`` calls only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ssmd.data.datasets.base import DetectionDataset
from ssmd.data.duplicates import (
    DEFAULT_HASH_SIZE,
    DuplicateReport,
    dhash,
    group_hashes,
    pixel_digest,
)
from ssmd.data.io import atomic_write_json, image_array
from ssmd.utils.errors import DataError, describe

__all__ = [
    "CHECK_DUP_THRESHOLD",
    "IMBALANCE_RATIO",
    "CheckReport",
    "FileCheckCache",
    "Finding",
    "check_dataset",
    "default_cache_file",
]

logger = logging.getLogger(__name__)

CHECK_DUP_THRESHOLD = 16
"""Near-identical for ``ssmd data check``: dHash distance ``<= 16`` of 256 bits. The split's
BUSI-tuned 64 (:data:`~ssmd.data.duplicates.DEFAULT_THRESHOLD`) chains look-alike dark
fluorescence images of DSB 2018 into one group of 113 images (single linkage, members up to
125 bits apart); at 16 bits DSB has 2 pairs, at 24 bits 5, at 32 bits 17 (measured on
stage1_train). ``--dup-threshold 64`` gives the split's grouping."""

IMBALANCE_RATIO = 10.0
"""A category with fewer than ``1 / IMBALANCE_RATIO`` of the most frequent one's objects is flagged."""

_CACHE_FORMAT = "ssmd-data-check"
_CACHE_VERSION = 1
_SHOWN = 20  # findings of one kind printed before "... and N more"

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem: ``level``, the file, the field, the offending value and what is wrong."""

    level: Level
    path: str
    field: str
    value: Any
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.path}: field {self.field!r} = {describe(self.value)}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the value as its short ``repr``)."""
        return {
            "level": self.level,
            "path": self.path,
            "field": self.field,
            "value": describe(self.value),
            "message": self.message,
        }


def default_cache_file(source: str | Path, format_name: str) -> Path:
    """The check cache of a dataset: ``$SSMD_CACHE_DIR/data-check/<format>-<hash>.json``
    (else under ``$XDG_CACHE_HOME/ssmd`` or ``~/.cache/ssmd``)."""
    env = os.environ.get("SSMD_CACHE_DIR")
    if env:
        base = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "ssmd"
    digest = hashlib.sha1(str(Path(source).resolve()).encode()).hexdigest()[:16]
    return base / "data-check" / f"{format_name}-{digest}.json"


class FileCheckCache:
    """Per-file check results keyed by ``(absolute path, size, mtime)`` in one JSON file.

    Args:
        path: the JSON file (created on :meth:`save`); ``None``: an in-memory cache only.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict[str, Any]] = {}
        self.hits = 0
        self.misses = 0
        self._changed = False
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if data.get("format") == _CACHE_FORMAT and data.get("version") == _CACHE_VERSION:
                    self.entries = dict(data["entries"])
                else:
                    logger.warning("%s: check cache of another format/version; rebuilding", path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("%s: unreadable check cache (%s); rebuilding", path, exc)

    @staticmethod
    def _key(path: Path) -> tuple[str, list[int]]:
        st = path.stat()
        return str(path.resolve()), [int(st.st_size), int(st.st_mtime_ns)]

    def get(self, path: Path) -> dict[str, Any] | None:
        """The cached result of ``path`` if the file is unchanged, else ``None``."""
        try:
            name, stamp = self._key(path)
        except OSError:
            return None
        hit = self.entries.get(name)
        if hit is not None and hit.get("stamp") == stamp:
            self.hits += 1
            return dict(hit["info"])
        self.misses += 1
        return None

    def put(self, path: Path, info: dict[str, Any]) -> None:
        """Remember ``info`` for ``path`` as it is now (a missing file is not cached)."""
        try:
            name, stamp = self._key(path)
        except OSError:
            return
        self.entries[name] = {"stamp": stamp, "info": info}
        self._changed = True

    def _group_stamp(self, paths: list[Path]) -> str | None:
        h = hashlib.sha1()
        try:
            for p in paths:
                name, stamp = self._key(p)
                h.update(f"{name}\0{stamp[0]}\0{stamp[1]}\n".encode())
        except OSError:
            return None
        return h.hexdigest()

    def get_group(self, key: str, paths: list[Path]) -> dict[str, Any] | None:
        """The cached result derived from all of ``paths`` (e.g. an image's boxes from its
        masks) if none of them changed, else ``None``."""
        hit = self.entries.get(key)
        stamp = self._group_stamp(paths)
        if hit is not None and stamp is not None and hit.get("stamp") == stamp:
            return dict(hit["info"])
        return None

    def put_group(self, key: str, paths: list[Path], info: dict[str, Any]) -> None:
        """Remember ``info`` as derived from ``paths`` as they are now."""
        stamp = self._group_stamp(paths)
        if stamp is not None:
            self.entries[key] = {"stamp": stamp, "info": info}
            self._changed = True

    def save(self) -> None:
        """Write the cache file if anything changed (atomically; an unwritable folder is logged)."""
        if self.path is None or not self._changed:
            return
        try:
            atomic_write_json(
                self.path,
                {"format": _CACHE_FORMAT, "version": _CACHE_VERSION, "entries": self.entries},
            )
        except OSError as exc:
            logger.warning("%s: cannot write the check cache (%s)", self.path, exc)
        self._changed = False


@dataclass
class CheckReport:
    """What :func:`check_dataset` found.

    Attributes:
        format: the dataset's format name.
        source: the file or folder it was read from.
        images: images checked.
        masks: mask files checked.
        labeled: labeled images.
        objects_per_category: category name -> boxes.
        images_per_category: category name -> images holding at least one box of it.
        image_labels: image-level label -> images (formats with one, e.g. BUSI).
        empty_labeled: labeled images without any box.
        findings: errors and warnings, in file order.
        duplicates: the duplicate groups (``None`` when not searched).
        decoded: files decoded this run (the rest came from the cache).
        cached: files whose result came from the cache.
        seconds: wall time of the check.
    """

    format: str
    source: str
    images: int = 0
    masks: int = 0
    labeled: int = 0
    objects_per_category: dict[str, int] = field(default_factory=dict)
    images_per_category: dict[str, int] = field(default_factory=dict)
    image_labels: dict[str, int] = field(default_factory=dict)
    empty_labeled: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    duplicates: DuplicateReport | None = None
    decoded: int = 0
    cached: int = 0
    seconds: float = 0.0

    @property
    def errors(self) -> list[Finding]:
        """Findings of level ``error``."""
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """Findings of level ``warning``."""
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise the first error as a :class:`DataError` (the count of the others in its reason).

        Raises:
            DataError: the report has errors.
        """
        errs = self.errors
        if errs:
            e = errs[0]
            more = f" (and {len(errs) - 1} more errors: ssmd data check lists them)"
            raise DataError(e.path, e.field, e.value, e.message + (more if len(errs) > 1 else ""))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with every finding."""
        return {
            "format": self.format,
            "source": self.source,
            "images": self.images,
            "masks": self.masks,
            "labeled": self.labeled,
            "objects_per_category": self.objects_per_category,
            "images_per_category": self.images_per_category,
            "image_labels": self.image_labels,
            "empty_labeled": self.empty_labeled,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [f.to_dict() for f in self.findings],
            "duplicates": self.duplicates.to_dict() if self.duplicates is not None else None,
            "decoded": self.decoded,
            "cached": self.cached,
            "seconds": self.seconds,
        }

    def format_text(self) -> str:
        """The report ``ssmd data check`` prints."""
        lines = [
            f"data check of {self.source} (format {self.format}): {self.images} images, "
            f"{self.masks} masks decoded fully ({self.decoded} read, {self.cached} unchanged "
            f"since the last check) in {self.seconds:.1f} s",
            f"labeled images: {self.labeled} ({len(self.empty_labeled)} without objects)",
            "class balance (objects / images):",
        ]
        for name, n in self.objects_per_category.items():
            lines.append(f"  {name}: {n} objects in {self.images_per_category.get(name, 0)} images")
        if self.image_labels:
            lines.append(
                "image labels: " + ", ".join(f"{k} {v}" for k, v in self.image_labels.items())
            )
        if self.duplicates is not None:
            lines.append(self.duplicates.format().rstrip())
        for title, found in (("errors", self.errors), ("warnings", self.warnings)):
            lines.append(f"{title}: {len(found)}")
            lines += [f"  {f}" for f in found[:_SHOWN]]
            if len(found) > _SHOWN:
                lines.append(f"  ... and {len(found) - _SHOWN} more")
        lines.append("OK" if self.ok else f"FAILED: {len(self.errors)} errors")
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- per file
def _image_info(path: Path, hash_size: int) -> dict[str, Any]:
    """Decode one image; its shape, dtype, range and hashes, or the error."""
    try:
        a = image_array(path)
    except DataError as exc:
        return {"error": [exc.field, str(exc.value), exc.reason]}
    info: dict[str, Any] = {"shape": list(a.shape), "dtype": a.dtype.str}
    if a.size:
        info["min"], info["max"] = float(a.min()), float(a.max())
    try:
        info["digest"] = pixel_digest(a)
        info["dhash"] = np.packbits(dhash(a, hash_size)).tobytes().hex()
    except (TypeError, ValueError, OSError) as exc:  # a pixel format PIL cannot convert
        info["hash_error"] = str(exc)
    return info


def _mask_info(path: Path) -> dict[str, Any]:
    """Decode one mask; its shape, nonzero count and whether it holds one nonzero value."""
    try:
        a = image_array(path)
    except DataError as exc:
        return {"error": [exc.field, str(exc.value), exc.reason]}
    if a.ndim == 3:
        if a.shape[2] in (2, 4):
            a = a[:, :, :-1]  # drop alpha
        a = a.max(axis=2)  # (H, W)
    nonzero = int(np.count_nonzero(a))
    peak = a.max() if a.size else 0
    return {
        "shape": [int(a.shape[0]), int(a.shape[1])],
        "nonzero": nonzero,
        "binary": bool(nonzero == 0 or np.count_nonzero(a == peak) == nonzero),
    }


def _image_findings(path: str, info: dict[str, Any], size: tuple[int, int]) -> list[Finding]:
    """Findings of one decoded image whose record says ``size = (width, height)``."""
    if "error" in info:
        fld, value, reason = info["error"]
        return [Finding("error", path, fld, value, reason)]
    out: list[Finding] = []
    shape, dtype = tuple(info["shape"]), str(info["dtype"])
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 2, 3, 4)):
        out.append(Finding("error", path, "image.shape", shape, "expected (H, W) or (H, W, 1..4)"))
        return out
    if (shape[1], shape[0]) != size:
        out.append(
            Finding(
                "error",
                path,
                "image.size",
                (shape[1], shape[0]),
                f"decoded (width, height) differs from the record's {size}",
            )
        )
    lo, hi = info.get("min"), info.get("max")
    kind = np.dtype(dtype)
    if kind in (np.uint8, np.uint16):
        pass
    elif kind == np.int32:
        if lo is not None and hi is not None and (lo < 0 or hi > 65535):
            out.append(
                Finding("error", path, "image.values", (lo, hi), "32-bit image outside 0..65535")
            )
    elif kind in (np.float32, np.float64):
        if lo is not None and hi is not None and not (lo >= 0.0 and hi <= 1.0):
            out.append(
                Finding("error", path, "image.values", (lo, hi), "float image must lie in [0, 1]")
            )
    else:
        out.append(Finding("error", path, "image.dtype", str(kind), "unsupported pixel type"))
    if lo is not None and lo == hi:
        out.append(Finding("warning", path, "image.values", lo, "constant image (blank)"))
    if "hash_error" in info:
        out.append(Finding("warning", path, "image", path, f"not hashed: {info['hash_error']}"))
    return out


def _mask_findings(
    path: str, info: dict[str, Any], size: tuple[int, int], image: str
) -> list[Finding]:
    if "error" in info:
        fld, value, reason = info["error"]
        return [Finding("error", path, "mask" if fld == "image" else fld, value, reason)]
    out: list[Finding] = []
    h, w = info["shape"]
    if (w, h) != size:
        out.append(
            Finding(
                "error",
                path,
                "mask.size",
                (w, h),
                f"differs from the (width, height) {size} of image {image}",
            )
        )
    if info["nonzero"] == 0:
        out.append(Finding("warning", path, "mask.pixels", "all zero", "all-background mask"))
    elif not info["binary"]:
        out.append(
            Finding("warning", path, "mask.values", "several nonzero values", "mask is not binary")
        )
    return out


def _mask_files(ds: DetectionDataset, i: int) -> list[Path]:
    """The mask files behind image ``i`` (DSB2018, BUSI); empty for box-only formats."""
    paths = getattr(ds, "mask_paths", None)
    if callable(paths):
        return list(paths(i))
    stored = getattr(ds, "_mask_paths", None)  # BUSI keeps them as a list
    if isinstance(stored, list) and i < len(stored):
        return list(stored[i])
    return []


def _annotation_info(ds: DetectionDataset, i: int, size: tuple[int, int]) -> dict[str, Any]:
    """Box count, label counts and the first bad box of image ``i``, or the reader's error."""
    try:
        boxes, labels = ds.annotation(i)  # (N, 4) xyxy, (N,)
    except DataError as exc:
        value = exc.value if isinstance(exc.value, (str, int, float)) else describe(exc.value)
        return {"error": [exc.path, exc.field, value, exc.reason]}
    info: dict[str, Any] = {
        "n": int(boxes.shape[0]),
        "labels": {str(k): v for k, v in Counter(labels.tolist()).items()},
        "bad": None,
    }
    if boxes.numel():
        bad = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1) | (boxes[:, :2] < 0).any(dim=1)
        bad |= (boxes[:, 2] > size[0]) | (boxes[:, 3] > size[1])
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            info["bad"] = [k, [round(v, 2) for v in boxes[k].tolist()]]
    return info


# ---------------------------------------------------------------------------- the check
def check_dataset(
    ds: DetectionDataset,
    cache: FileCheckCache | None = None,
    duplicates: bool = True,
    dup_threshold: int = CHECK_DUP_THRESHOLD,
    hash_size: int = DEFAULT_HASH_SIZE,
    progress: bool = False,
) -> CheckReport:
    """Decode every image and mask of ``ds`` and check it (module docstring).

    Args:
        ds: a 2D dataset whose records point at image files.
        cache: per-file results from earlier checks (default: none, decode everything).
        duplicates: also group pixel- and near-identical images.
        dup_threshold: near-identical = dHash distance ``<=`` this many bits.
        hash_size: dHash side.
        progress: show a progress bar.

    Returns:
        The report; :meth:`CheckReport.ok` is false when any error was found.
    """
    start = time.perf_counter()
    cache = cache if cache is not None else FileCheckCache(None)
    hits0, misses0 = cache.hits, cache.misses
    report = CheckReport(format=ds.format_name, source=ds.source, images=len(ds))
    names = {k: str(c.get("name", c.get("id"))) for k, c in enumerate(ds.categories, start=1)}
    objects: Counter[str] = Counter({n: 0 for n in names.values()})
    images_with: Counter[str] = Counter({n: 0 for n in names.values()})
    image_labels: Counter[str] = Counter()
    digests: dict[str, tuple[str, np.ndarray]] = {}
    indices: Any = range(len(ds))
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="data check", unit="img", dynamic_ncols=True, mininterval=1.0)
    for i in indices:
        rec = ds.records[i]
        size = (rec.width, rec.height)
        info = cache.get(rec.path)
        if info is None:
            info = _image_info(rec.path, hash_size)
            cache.put(rec.path, info)
        report.findings += _image_findings(str(rec.path), info, size)
        if "digest" in info:
            bits = np.unpackbits(np.frombuffer(bytes.fromhex(info["dhash"]), dtype=np.uint8))
            digests[rec.file_name] = (info["digest"], bits[: hash_size * hash_size].astype(bool))
        try:
            masks = _mask_files(ds, i)
        except DataError as exc:
            report.findings.append(Finding("error", exc.path, exc.field, exc.value, exc.reason))
            masks = []
        mask_found: list[Finding] = []
        for mp in masks:
            minfo = cache.get(mp)
            if minfo is None:
                minfo = _mask_info(mp)
                cache.put(mp, minfo)
            mask_found += _mask_findings(str(mp), minfo, size, str(rec.path))
        report.masks += len(masks)
        labeled = ds.is_labeled(i)
        report.labeled += int(labeled)
        # boxes read from per-image mask files are cached with those files' stamps (DSB:
        # computing them decodes every mask again); box-only formats are re-read (cheap)
        ann_key = f"annotation:{Path(rec.path).resolve()}"
        ann = cache.get_group(ann_key, [rec.path, *masks]) if masks else None
        if ann is None:
            ann = _annotation_info(ds, i, size)
            if masks:
                cache.put_group(ann_key, [rec.path, *masks], ann)
        if ann.get("n") == 0:  # the format reads "no object" (BUSI normal): empty masks agree
            mask_found = [f for f in mask_found if f.field != "mask.pixels"]
        report.findings += mask_found
        if "error" in ann:
            path, fld, value, reason = ann["error"]
            if not any(f.path == path and f.level == "error" for f in report.findings):
                report.findings.append(Finding("error", path, fld, value, reason))
            continue
        if ann.get("bad") is not None:
            k, box = ann["bad"]
            report.findings.append(
                Finding(
                    "error",
                    str(rec.path),
                    f"boxes[{k}]",
                    box,
                    f"box (xyxy) without positive size or outside the {size} image",
                )
            )
        if ann["n"] == 0 and labeled:
            report.empty_labeled.append(rec.file_name)
        for lab, n in ann["labels"].items():
            objects[names.get(int(lab), str(lab))] += n
            images_with[names.get(int(lab), str(lab))] += 1
        image_label = ds.image_fields(i).get("image_label")
        if image_label is not None:
            image_labels[str(image_label)] += 1
    report.objects_per_category = dict(objects)
    report.images_per_category = dict(images_with)
    report.image_labels = dict(sorted(image_labels.items()))
    _balance_findings(report)
    if duplicates and digests:
        order = sorted(digests)
        hashes = np.stack([digests[n][1] for n in order])  # (N, bits)
        labels_of = None
        if image_labels:
            labels_of = {
                r.file_name: str(ds.image_fields(k).get("image_label", ""))
                for k, r in enumerate(ds.records)
            }
        report.duplicates = group_hashes(
            order, [digests[n][0] for n in order], hashes, labels_of, dup_threshold, hash_size
        )
        for g in report.duplicates.groups:
            what = (
                "pixel-identical"
                if g.pixel_identical
                else f"near-identical (dHash <= {g.max_distance} bits)"
            )
            conflict = f", labels {sorted(set(g.labels))} differ" if g.conflicting else ""
            report.findings.append(
                Finding(
                    "warning",
                    g.members[0],
                    "image",
                    f"{len(g.members)} images",
                    f"{what} to {', '.join(g.members[1:4])}"
                    + (f" and {len(g.members) - 4} more" if len(g.members) > 4 else "")
                    + f"{conflict}: keep them on one side of a split",
                )
            )
    cache.save()
    report.decoded = cache.misses - misses0
    report.cached = cache.hits - hits0
    report.seconds = time.perf_counter() - start
    return report


def _balance_findings(report: CheckReport) -> None:
    counts = report.objects_per_category
    if not counts or report.labeled == 0:  # a folder of unlabeled images has no balance
        return
    top = max(counts.values())
    for name, n in counts.items():
        if n == 0:
            report.findings.append(
                Finding("warning", report.source, "categories", name, "category without objects")
            )
        elif n * IMBALANCE_RATIO < top:
            report.findings.append(
                Finding(
                    "warning",
                    report.source,
                    "categories",
                    name,
                    f"{n} objects, fewer than 1/{IMBALANCE_RATIO:g} of the most frequent "
                    f"category's {top} (class imbalance)",
                )
            )
    if report.empty_labeled:
        report.findings.append(
            Finding(
                "warning",
                report.source,
                "annotations",
                report.empty_labeled[:5],
                f"{len(report.empty_labeled)} labeled images have no objects",
            )
        )
