"""MetaImage (``.mhd`` + ``.raw`` / ``.zraw``, or ``.mha``): LUNA16's format, read with SimpleITK.

SimpleITK reads the pixels and the geometry. Its own errors on a bad file are unhelpful:
a raw file shorter than the header says is reported as "No such file or directory",
and a *longer* one is read without complaint (the extra bytes ignored). So the header
is checked first (a few ``key = value`` lines, not a parser of the pixel data), and
every problem raises :class:`~ssmd.utils.errors.DataError` naming the file, the
header field and the value:

- a missing header field (``NDims``, ``DimSize``, ``ElementType``, ``ElementDataFile``);
- a missing data file (``ElementDataFile`` names a file that does not exist);
- an uncompressed data file whose size is not ``prod(DimSize) * channels * bytes per
  element`` (``ElementType``);
- a compressed one (``CompressedData = True``) whose size is not ``CompressedDataSize``
  or that does not inflate (zlib) to exactly that many bytes -- SimpleITK only prints
  "Uncompress failed" and returns an image of garbage;
- anything SimpleITK still refuses (corrupt zlib stream, ...).

Geometry follows :mod:`.volume`: ``Offset`` (a.k.a. ``Origin``) is the world position of
voxel ``(0, 0, 0)``, ``TransformMatrix`` the direction (row-major), ``ElementSpacing``
the voxel size, arrays ``(Z, Y, X)``.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np

from ssmd.data.volumes._deps import require
from ssmd.data.volumes.volume import Volume, VolumeGeometry
from ssmd.utils.errors import DataError

__all__ = [
    "MET_ELEMENT_BYTES",
    "check_metaimage",
    "read_metaimage",
    "read_metaimage_geometry",
    "read_metaimage_header",
    "write_metaimage",
]

MET_ELEMENT_BYTES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}
"""Bytes per element of each MetaImage ``ElementType``."""

_MAX_HEADER_BYTES = 1 << 16


def read_metaimage_header(path: str | Path) -> dict[str, str]:
    """The ``key = value`` fields of a MetaImage header, up to ``ElementDataFile``.

    Keys keep their spelling; look them up with :func:`_get` (case-insensitive).

    Raises:
        DataError: the file is missing or is not a MetaImage header.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(_MAX_HEADER_BYTES)
    except FileNotFoundError as exc:
        raise DataError(path, "file", str(path), "does not exist") from exc
    except IsADirectoryError as exc:
        raise DataError(path, "file", str(path), "is a folder, not a .mhd file") from exc
    fields: dict[str, str] = {}
    for raw in head.split(b"\n"):
        line = raw.decode("latin-1").strip()
        if not line:
            continue
        if "=" not in line:
            break  # binary data of a .mha, or not a header at all
        key, value = (s.strip() for s in line.split("=", 1))
        fields[key] = value
        if key.lower() == "elementdatafile":
            break
    if _get(fields, "NDims") is None:
        raise DataError(path, "header", str(path), "not a MetaImage header (no 'NDims = ...' line)")
    return fields


def _get(fields: dict[str, str], key: str) -> str | None:
    for k, v in fields.items():
        if k.lower() == key.lower():
            return v
    return None


def _need(path: Path, fields: dict[str, str], key: str) -> str:
    v = _get(fields, key)
    if v is None:
        raise DataError(path, key, None, "missing MetaImage header field")
    return v


def _ints(path: Path, key: str, text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split()]
    except ValueError:
        raise DataError(path, key, text, "expected integers") from None
    if not vals or min(vals) < 1:
        raise DataError(path, key, text, "expected positive integers")
    return vals


def _check_data_file(path: Path, fields: dict[str, str]) -> None:
    """Check the data file against the header (see the module docstring)."""
    ndims = _ints(path, "NDims", _need(path, fields, "NDims"))[0]
    dims = _ints(path, "DimSize", _need(path, fields, "DimSize"))
    if len(dims) != ndims:
        raise DataError(path, "DimSize", _get(fields, "DimSize"), f"expected {ndims} sizes (NDims)")
    etype = _need(path, fields, "ElementType").upper()
    if etype not in MET_ELEMENT_BYTES:
        raise DataError(
            path, "ElementType", etype, f"unknown; known: {', '.join(sorted(MET_ELEMENT_BYTES))}"
        )
    channels = _ints(
        path, "ElementNumberOfChannels", _get(fields, "ElementNumberOfChannels") or "1"
    )[0]
    data_name = _need(path, fields, "ElementDataFile")
    if data_name.upper() == "LOCAL" or data_name.upper().startswith("LIST") or "%" in data_name:
        return  # pixels inside the header file, or a file list: SimpleITK checks those
    data = path.parent / data_name
    if not data.is_file():
        raise DataError(path, "ElementDataFile", data_name, f"data file {data} does not exist")
    actual = data.stat().st_size
    compressed = (_get(fields, "CompressedData") or "False").strip().lower() == "true"
    want = math.prod(dims) * channels * MET_ELEMENT_BYTES[etype]
    if compressed:
        declared = _get(fields, "CompressedDataSize")
        if declared is not None:
            size = _ints(path, "CompressedDataSize", declared)[0]
            if actual != size:
                raise DataError(
                    path, "CompressedDataSize", size,
                    f"the compressed data file {data.name} has {actual} bytes",
                )  # fmt: skip
        got = _inflated_size(data)
        if got != want:
            raise DataError(
                path, "DimSize", _get(fields, "DimSize"),
                f"header needs {want} bytes but {data.name} inflates to "
                + ("an invalid zlib stream" if got < 0 else f"{got}"),
            )  # fmt: skip
        return
    if actual != want:
        raise DataError(
            path, "DimSize", _get(fields, "DimSize"),
            f"header needs {want} bytes ({' x '.join(map(str, dims))} x {channels} channel(s) "
            f"x {MET_ELEMENT_BYTES[etype]} bytes of {etype}) but {data.name} has {actual}",
        )  # fmt: skip


def check_metaimage(path: str | Path) -> dict[str, str]:
    """Check a MetaImage header against its data file without reading the pixels.

    Returns:
        The header fields (:func:`read_metaimage_header`).

    Raises:
        DataError: see the module docstring.
    """
    path = Path(path)
    fields = read_metaimage_header(path)
    _check_data_file(path, fields)
    return fields


def read_metaimage_geometry(path: str | Path, check: bool = True) -> VolumeGeometry:
    """Size, spacing, origin and direction of a MetaImage from its header (pixels not read).

    Args:
        path: the ``.mhd`` / ``.mha``.
        check: also check the data file against the header (:func:`check_metaimage`;
            a ``stat``, no reading).

    Raises:
        DataError: a bad header or data file (see the module docstring).
        MissingDependencyError: SimpleITK is not installed.
    """
    path = Path(path)
    if check:
        check_metaimage(path)
    elif not path.is_file():
        raise DataError(path, "file", str(path), "does not exist")
    sitk = require("SimpleITK", "reading MetaImage (.mhd) files")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())[-300:]
        raise DataError(path, "header", str(path), f"SimpleITK cannot read it: {reason}") from exc
    if reader.GetDimension() != 3:
        raise DataError(path, "NDims", reader.GetDimension(), "expected a 3D image")
    return VolumeGeometry(
        size=tuple(reader.GetSize()),
        spacing=tuple(reader.GetSpacing()),
        origin=tuple(reader.GetOrigin()),
        direction=np.asarray(reader.GetDirection(), dtype=np.float64).reshape(3, 3),
        source=str(path),
    )


def _inflated_size(path: Path, chunk: int = 1 << 20) -> int:
    """Bytes a zlib-compressed file inflates to (streamed), or -1 if it is not valid zlib.

    SimpleITK only prints "Uncompress failed" on a corrupt ``.zraw`` and returns an
    image anyway, so the stream is checked here.
    """
    inflater = zlib.decompressobj()
    total = 0
    try:
        with path.open("rb") as fh:
            while block := fh.read(chunk):
                total += len(inflater.decompress(block))
                while inflater.unconsumed_tail:
                    total += len(inflater.decompress(inflater.unconsumed_tail))
            total += len(inflater.flush())
    except zlib.error:
        return -1
    return total if inflater.eof else -1


def read_metaimage(path: str | Path) -> Volume:
    """Read a ``.mhd`` (with its ``.raw`` / ``.zraw``) or ``.mha`` file as a :class:`Volume`.

    Returns:
        ``array`` ``(Z, Y, X)`` (``(C, Z, Y, X)`` for multi-channel images) in the stored
        dtype (LUNA16: int16 HU), with spacing, origin and direction from the header.

    Raises:
        DataError: see the module docstring.
        MissingDependencyError: SimpleITK is not installed.
    """
    path = Path(path)
    check_metaimage(path)
    sitk = require("SimpleITK", "reading MetaImage (.mhd) files")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())[-300:]
        raise DataError(path, "image", str(path), f"SimpleITK cannot read it: {reason}") from exc
    if image.GetDimension() != 3:
        raise DataError(path, "NDims", image.GetDimension(), "expected a 3D image")
    array = sitk.GetArrayFromImage(image)  # (Z, Y, X) or (Z, Y, X, C)
    if array.ndim == 4:
        array = np.ascontiguousarray(np.moveaxis(array, -1, 0))  # (C, Z, Y, X)
    return Volume(
        array=array,
        spacing=tuple(image.GetSpacing()),
        origin=tuple(image.GetOrigin()),
        direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
        source=str(path),
        meta={"format": "metaimage"},
    )


def write_metaimage(volume: Volume, path: str | Path, compress: bool = True) -> Path:
    """Write ``volume`` (``(Z, Y, X)``) as ``.mhd`` + ``.zraw`` (``.raw`` if not ``compress``).

    Raises:
        ValueError: a multi-channel volume (write one channel at a time).
        MissingDependencyError: SimpleITK is not installed.
    """
    if volume.array.ndim != 3:
        raise ValueError(f"write_metaimage writes (Z, Y, X) arrays, got {volume.array.shape}")
    sitk = require("SimpleITK", "writing MetaImage (.mhd) files")
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(float(v) for v in volume.direction.reshape(-1)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path
