"""Lazy imports of the optional medical-imaging libraries (the ``medical`` extra).

SimpleITK, pydicom and nibabel are imported only when a reader needs them, so
``import ssmd`` stays light; a missing one raises :class:`MissingDependencyError`
saying which package to install and why.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependencyError", "require"]

_PIP_NAMES = {"SimpleITK": "SimpleITK", "pydicom": "pydicom", "nibabel": "nibabel"}


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message says how to install it."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError`.

    Args:
        module: ``"SimpleITK"``, ``"pydicom"`` or ``"nibabel"``.
        purpose: what needs it, e.g. ``"reading MetaImage (.mhd) files"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pip = _PIP_NAMES.get(module, module)
        raise MissingDependencyError(
            f"{purpose} needs {module}, which is not installed: "
            f"pip install 'ssmd[medical]' (or pip install {pip})"
        ) from exc
