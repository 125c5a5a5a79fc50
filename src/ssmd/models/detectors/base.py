"""The detector registry: every detector is built by name (``model.name`` in a config).

A detector module registers a tiny builder with ``@MODELS.register("name")`` (timm style).
A builder takes ``num_classes`` and the keys of the config's ``model`` section as keyword-only
parameters, turns them into constructor arguments and returns the detector; the detector
itself never reads a config (detectron2's rule). :func:`ssmd.models.factory.model_from_config`
matches a config section to a builder's parameters.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ssmd.utils.registry import Registry

__all__ = ["MODELS"]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
"""Detector builders by name; duplicate names are refused, unknown ones list the known."""
