"""``ssmd data check`` and the up-front check of ``ssmd data convert`` / ``ssmd train``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_check_arguments", "cmd_check", "precheck", "precheck_config"]


def add_check_arguments(q: argparse.ArgumentParser) -> None:
    """The options of ``ssmd data check`` beyond ``--format F SRC``."""
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.add_argument(
        "--cache",
        default=None,
        metavar="FILE",
        help="check cache (per file: path, size, mtime); default "
        "$SSMD_CACHE_DIR/data-check/<format>-<hash>.json (else ~/.cache/ssmd/...)",
    )
    q.add_argument("--no-cache", action="store_true", help="decode every file, keep no cache")
    q.add_argument(
        "--no-duplicates", action="store_true", help="skip the duplicate-image search (dHash)"
    )
    q.add_argument(
        "--dup-threshold",
        type=int,
        default=16,
        metavar="BITS",
        help="near-identical = dHash (256 bits) distance <= BITS (default 16: near-copies; "
        "64 is ssmd data split's grouping for BUSI; -1: pixel-identical only)",
    )


def _cache(dataset: Any, path: str | None, disabled: bool) -> Any:
    from ssmd.data.checks import FileCheckCache, default_cache_file

    if disabled:
        return FileCheckCache(None)
    return FileCheckCache(path or default_cache_file(dataset.source, dataset.format_name))


def cmd_check(args: argparse.Namespace, dataset: Any) -> int:
    """Run the check on ``dataset``, print the report; exit status 1 when it has errors."""
    from ssmd.data.checks import check_dataset

    if getattr(dataset, "spatial_dims", 2) == 3:
        raise ValueError(f"ssmd data check reads 2D images; --format {args.format} holds volumes")
    report = check_dataset(
        dataset,
        _cache(dataset, args.cache, args.no_cache),
        duplicates=not args.no_duplicates,
        dup_threshold=args.dup_threshold,
        progress=sys.stderr.isatty(),
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_text(), end="")
    return 0 if report.ok else 1


def precheck(dataset: Any, cache: str | Path | None = None, what: str = "") -> None:
    """The up-front check: decode every file (cached), print a one-line summary.

    Duplicates are not searched here (``ssmd data check`` reports them); only errors stop
    the command.

    Raises:
        DataError: the first error found (the count of the others in its message).
    """
    from ssmd.data.checks import check_dataset

    if getattr(dataset, "spatial_dims", 2) == 3 or not getattr(dataset, "records", None):
        return
    if not all(Path(r.path).is_file() for r in dataset.records[:1]):
        return  # generated in memory (synthetic without a cache folder)
    report = check_dataset(
        dataset,
        _cache(dataset, str(cache) if cache else None, False),
        duplicates=False,
        progress=sys.stderr.isatty(),
    )
    print(
        f"ssmd{what}: data check of {report.images} images, {report.masks} masks "
        f"({report.decoded} decoded, {report.cached} unchanged) in {report.seconds:.1f} s: "
        f"{len(report.errors)} errors, {len(report.warnings)} warnings",
        file=sys.stderr,
    )
    report.raise_for_errors()


def precheck_config(config: dict[str, Any]) -> None:
    """The up-front check of ``ssmd train``: the dataset of a detection config's ``data``.

    Skipped for generated (``synthetic``) data and for other tasks (their readers are not
    file-per-image).
    """
    if config.get("task", "detection") != "detection":
        return
    data = config.get("data") or {}
    if data.get("format") in (None, "synthetic"):
        return
    from ssmd.tasks.detection import dataset_from_config

    precheck(dataset_from_config(data), what=" train")
