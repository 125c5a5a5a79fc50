"""Find pixel-identical and near-identical images (difference hash), and group them.

Public datasets collected from clinical archives hold the same scan more than once: the
same frame re-exported at another crop or with other burned-in marks, and sometimes
under two different class labels (BUSI is a known case). A split that puts one copy in
train and the other in test leaks, and a pair with two labels is label noise that no
model can fit. This module finds such groups so that :func:`ssmd.data.splits.make_split`
can keep each group on one side (``groups=``) and the caller can decide what to do with
groups whose labels conflict.

Two tests, both on the *decoded* pixels (file bytes, metadata and PNG compression do not
matter):

* **pixel-identical**: equal SHA-1 of the decoded array (dtype, shape and values);
* **near-identical**: the Hamming distance of the two images' difference hashes is at
  most ``threshold`` bits.

The difference hash (dHash, Krawetz 2013; the ``dhash`` of the ``imagehash`` package, which
is not a dependency -- it is 10 lines of numpy/PIL here): convert to 8-bit grey (PIL ``L``),
resize to ``(hash_size + 1) x hash_size`` (width x height) with Lanczos, and set bit
``(r, c)`` when pixel ``(r, c + 1)`` is brighter than pixel ``(r, c)``. The default
``hash_size=16`` gives 256 bits; two unrelated images agree on about half of them
(distance ~ 128, spread ~ 8 bits if bits were independent), so the default threshold of
64 bits (a quarter) is many spreads below chance while a re-crop or re-export of the same
frame stays far below it (see ``docs/benchmarks.md`` for what it finds on BUSI and what
the pairs near the threshold look like). A 64-bit hash (``hash_size=8``) is too coarse
for ultrasound: many unrelated images share most of its bits.

Groups are the connected components of the graph whose edges are the near-identical
pairs (single linkage): if A ~ B and B ~ C then A, B, C are one group even when A and C
are farther apart than ``threshold`` -- the right closure for splitting, since any chain
of look-alikes across a split is a leak.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from ssmd.data.io import PIL_ERRORS, image_array
from ssmd.utils.errors import DataError

__all__ = [
    "DEFAULT_HASH_SIZE",
    "DEFAULT_THRESHOLD",
    "ConflictRule",
    "DuplicateGroup",
    "DuplicateReport",
    "dhash",
    "find_duplicates",
    "group_hashes",
    "hamming_distances",
    "pixel_digest",
]

DEFAULT_HASH_SIZE = 16
"""dHash side: ``16 * 16 = 256`` bits."""

DEFAULT_THRESHOLD = 64
"""Near-identical: Hamming distance ``<= 64`` of the 256 bits (a quarter)."""

ConflictRule = Literal["drop", "keep"]
"""What to do with a group whose images carry different labels (see :meth:`DuplicateReport.excluded`)."""

_POPCOUNT = np.array([bin(k).count("1") for k in range(256)], dtype=np.uint16)


def pixel_digest(array: np.ndarray) -> str:
    """SHA-1 of a decoded image: dtype, shape and pixel values (equal iff pixel-identical)."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha1(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def dhash(image: Image.Image | np.ndarray, hash_size: int = DEFAULT_HASH_SIZE) -> np.ndarray:
    """Difference hash of an image as ``bool[hash_size * hash_size]`` (module docstring).

    Args:
        image: a PIL image or an array ``(H, W)`` / ``(H, W, C)`` (uint8, or any dtype,
            which is scaled to 0..255 by its own maximum before the grey conversion).
        hash_size: rows of the hash; the image is resized to ``hash_size + 1`` columns.
    """
    if hash_size < 2:
        raise ValueError(f"hash_size = {hash_size!r}: need an integer >= 2")
    if isinstance(image, np.ndarray):
        a = image
        if a.dtype != np.uint8:
            peak = float(a.max()) if a.size else 0.0
            a = (a.astype(np.float64) * (255.0 / peak if peak > 0 else 0.0)).round()
            a = a.astype(np.uint8)
        if a.ndim == 3 and a.shape[2] in (2, 4):
            a = a[:, :, :-1]  # drop alpha
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        pil = Image.fromarray(a)
    else:
        pil = image
    grey = pil.convert("L").resize((hash_size + 1, hash_size), Image.Resampling.LANCZOS)
    px = np.asarray(grey, dtype=np.int16)  # (hash_size, hash_size + 1)
    return (px[:, 1:] > px[:, :-1]).reshape(-1)


def hamming_distances(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Pairwise Hamming distances of bit hashes ``bool[N, B]`` and ``bool[M, B]`` -> ``int[N, M]``."""
    pa = np.packbits(np.asarray(a, dtype=bool), axis=1)  # (N, ceil(B / 8))
    pb = pa if b is None else np.packbits(np.asarray(b, dtype=bool), axis=1)
    if pa.shape[1] != pb.shape[1]:
        raise ValueError(f"hashes of different byte lengths: {pa.shape[1]} and {pb.shape[1]}")
    x = np.bitwise_xor(pa[:, None, :], pb[None, :, :])  # (N, M, bytes)
    return _POPCOUNT[x].sum(axis=2).astype(np.int64)  # (N, M)


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are copies of one another (two or more).

    Attributes:
        members: file names, sorted.
        labels: label of each member (same order), or ``()`` when no labels were given.
        pixel_identical: every member decodes to the same pixels.
        max_distance: the largest dHash distance between two members (a chain can
            exceed the threshold, see the module docstring).
    """

    members: tuple[str, ...]
    labels: tuple[str, ...]
    pixel_identical: bool
    max_distance: int

    @property
    def conflicting(self) -> bool:
        """Members carry different labels."""
        return len(set(self.labels)) > 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "members": list(self.members),
            "labels": list(self.labels),
            "pixel_identical": self.pixel_identical,
            "max_distance": self.max_distance,
            "conflicting": self.conflicting,
        }


@dataclass
class DuplicateReport:
    """All duplicate groups of a set of images (see :func:`find_duplicates`).

    Attributes:
        groups: groups of two or more images, ordered by their first member.
        n_images: images examined.
        threshold: the near-identical threshold used (bits).
        hash_size: the dHash side used (``hash_size ** 2`` bits).
        identical_pairs: pixel-identical pairs ``(a, b)``, ``a < b``.
    """

    groups: list[DuplicateGroup]
    n_images: int
    threshold: int
    hash_size: int
    identical_pairs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def conflicting(self) -> list[DuplicateGroup]:
        """Groups whose members' labels differ."""
        return [g for g in self.groups if g.conflicting]

    @property
    def duplicated_images(self) -> int:
        """Images that belong to a group."""
        return sum(len(g.members) for g in self.groups)

    def split_groups(self) -> list[list[str]]:
        """The groups as lists of file names, for ``make_split(groups=...)``."""
        return [list(g.members) for g in self.groups]

    def excluded(self, rule: ConflictRule = "drop") -> list[str]:
        """Images to leave out of every split part under the conflicting-label ``rule``.

        ``"drop"``: every member of every conflicting group (one of the labels is wrong
        and nothing says which; keeping them trains on contradicting targets for the same
        pixels and scores a model against a coin-flip label). ``"keep"``: none (the
        groups are still kept on one side of each split).
        """
        if rule == "drop":
            return sorted(n for g in self.conflicting for n in g.members)
        if rule == "keep":
            return []
        raise ValueError(f"conflicting-label rule {rule!r}: expected 'drop' or 'keep'")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with every group."""
        return {
            "images": self.n_images,
            "hash": f"dhash {self.hash_size}x{self.hash_size} ({self.hash_size**2} bits)",
            "threshold_bits": self.threshold,
            "groups": len(self.groups),
            "images_in_groups": self.duplicated_images,
            "pixel_identical_pairs": len(self.identical_pairs),
            "conflicting_groups": len(self.conflicting),
            "images_in_conflicting_groups": sum(len(g.members) for g in self.conflicting),
            "group_sizes": _size_counts(self.groups),
            "group_list": [g.to_dict() for g in self.groups],
        }

    def format(self, all_groups: bool = False) -> str:
        """A short report: counts, the conflicting groups, and every group if ``all_groups``."""
        d = self.to_dict()
        sizes = ", ".join(f"{n} of size {s}" for s, n in d["group_sizes"].items())
        lines = [
            f"duplicates ({d['hash']}, near-identical = Hamming distance <= {self.threshold}):",
            f"  {d['groups']} groups holding {d['images_in_groups']} of {self.n_images} images"
            + (f" ({sizes})" if sizes else ""),
            f"  {d['pixel_identical_pairs']} pixel-identical pairs",
            f"  {d['conflicting_groups']} groups with conflicting labels "
            f"({d['images_in_conflicting_groups']} images)",
        ]
        for title, groups in (("conflicting", self.conflicting), ("all", self.groups)):
            if groups and (title == "conflicting" or all_groups):
                lines.append(f"{title} groups:")
                for g in groups:
                    tag = "identical" if g.pixel_identical else f"max distance {g.max_distance}"
                    who = ", ".join(
                        f"{m} [{lab}]" if lab else m
                        for m, lab in zip(
                            g.members, g.labels or ("",) * len(g.members), strict=True
                        )
                    )
                    lines.append(f"  - {who} ({tag})")
        return "\n".join(lines) + "\n"


def _size_counts(groups: Iterable[DuplicateGroup]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for g in groups:
        counts[len(g.members)] = counts.get(len(g.members), 0) + 1
    return dict(sorted(counts.items()))


def _hash_file(path: Path, hash_size: int) -> tuple[str, np.ndarray]:
    arr = image_array(path)  # raises DataError for a missing / corrupt file
    try:
        return pixel_digest(arr), dhash(arr, hash_size)
    except PIL_ERRORS as exc:  # an array PIL cannot convert (e.g. 2-channel float)
        if isinstance(exc, DataError):
            raise
        raise DataError(
            path, "image", str(path), f"cannot hash the decoded pixels ({exc})"
        ) from exc


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def find_duplicates(
    images: Mapping[str, str | Path] | Sequence[tuple[str, str | Path]],
    labels: Mapping[str, str] | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    hash_size: int = DEFAULT_HASH_SIZE,
    block: int = 512,
) -> DuplicateReport:
    """Group pixel-identical and near-identical images (module docstring).

    Args:
        images: ``{file_name: path}`` (or ``(file_name, path)`` pairs); names must be unique.
        labels: optional ``{file_name: label}`` (e.g. the image class) to flag groups
            whose members disagree; every image must have one when given.
        threshold: near-identical when the dHash Hamming distance is ``<= threshold``
            bits; ``-1`` keeps only pixel-identical images.
        hash_size: dHash side (``hash_size ** 2`` bits).
        block: rows of the distance matrix computed at once (memory ``block * N * bits / 8``).

    Raises:
        DataError: an image that cannot be read (the message names it).
        ValueError: repeated names, a missing label, or a bad threshold / hash size.
    """
    items = list(images.items()) if isinstance(images, Mapping) else list(images)
    names = [str(n) for n, _ in items]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"image name {dup!r} is listed twice")
    bits = hash_size * hash_size
    if not isinstance(threshold, int) or not -1 <= threshold < bits:
        raise ValueError(f"threshold = {threshold!r}: need an integer in [-1, {bits - 1}] bits")
    if labels is not None:
        missing = [n for n in names if n not in labels]
        if missing:
            raise ValueError(f"no label for image {missing[0]!r} ({len(missing)} without)")
    order = sorted(range(len(items)), key=lambda k: names[k])
    names = [names[k] for k in order]
    paths = [Path(items[k][1]) for k in order]
    digests: list[str] = []
    hashes = np.zeros((len(names), bits), dtype=bool)
    for k, p in enumerate(paths):
        digest, bits_k = _hash_file(p, hash_size)
        digests.append(digest)
        hashes[k] = bits_k
    return group_hashes(names, digests, hashes, labels, threshold, hash_size, block)


def group_hashes(
    names: Sequence[str],
    digests: Sequence[str],
    hashes: np.ndarray,
    labels: Mapping[str, str] | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    hash_size: int = DEFAULT_HASH_SIZE,
    block: int = 512,
) -> DuplicateReport:
    """Group images whose :func:`pixel_digest` and :func:`dhash` are already known.

    What :func:`find_duplicates` does after hashing the files; ``ssmd data check`` calls it
    with hashes it cached, so an unchanged image is not decoded again.

    Args:
        names: unique file names, sorted.
        digests: :func:`pixel_digest` of each image (same order).
        hashes: ``bool[N, hash_size ** 2]``, :func:`dhash` of each image.
        labels, threshold, hash_size, block: as in :func:`find_duplicates`.
    """
    names = list(names)
    n = len(names)
    if len(digests) != n or hashes.shape[0] != n:
        raise ValueError(f"{n} names, {len(digests)} digests and {hashes.shape[0]} hashes")
    uf = _UnionFind(n)
    by_digest: dict[str, list[int]] = {}
    for k, digest in enumerate(digests):
        by_digest.setdefault(digest, []).append(k)
    identical: list[tuple[str, str]] = []
    for ks in by_digest.values():
        for a in range(len(ks)):
            uf.union(ks[0], ks[a])
            identical += [(names[ks[a]], names[ks[b]]) for b in range(a + 1, len(ks))]
    if threshold >= 0:
        for start in range(0, n, block):
            dist = hamming_distances(hashes[start : start + block], hashes)  # (b, N)
            rows, cols = np.nonzero(dist <= threshold)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                if start + r < c:
                    uf.union(start + r, c)
    members: dict[int, list[int]] = {}
    for k in range(n):
        members.setdefault(uf.find(k), []).append(k)
    groups = []
    for ks in sorted((v for v in members.values() if len(v) > 1), key=lambda v: v[0]):
        dist = hamming_distances(hashes[ks])  # (g, g)
        groups.append(
            DuplicateGroup(
                members=tuple(names[k] for k in ks),
                labels=tuple(str(labels[names[k]]) for k in ks) if labels is not None else (),
                pixel_identical=len({digests[k] for k in ks}) == 1,
                max_distance=int(dist.max()),
            )
        )
    return DuplicateReport(
        groups=groups,
        n_images=n,
        threshold=threshold,
        hash_size=hash_size,
        identical_pairs=sorted(identical),
    )
