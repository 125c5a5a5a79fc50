"""The contract every training method implements, and the registry that builds them.

A method is small: it owns the model(s) it trains (the student, and a teacher if it
has one) and implements one :meth:`Method.training_step` that turns a labeled batch
(and an unlabeled batch, for semi-supervised methods) into a dict of losses. The
engine does everything else — optimisation, schedules, EMA updates through
:meth:`Method.after_step`, evaluation, checkpointing and logging.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ssmd.models.detectors.base import check_capabilities, detector_capabilities
from ssmd.structures.sample import Batch
from ssmd.utils.registry import Registry

__all__ = ["METHODS", "Method", "build_method", "merged_method_params"]


class Method(nn.Module, abc.ABC):
    """Base class of training methods.

    Args:
        model: the detector (or classifier) being trained — the student.

    Subclasses set :attr:`uses_unlabeled`, :attr:`defaults` (their config keys
    with default values) and :attr:`requires` (the detector capabilities they use, from
    :data:`ssmd.models.detectors.base.CAPABILITIES`: ``"losses"``, ``"detections"``,
    ``"dense_maps"``; checked by :func:`build_method`; :attr:`requires_any`: at least one of
    these, e.g. CSD's dense maps or region scores) and implement :meth:`training_step`.
    A method trained in several stages names its recipe in :attr:`recipe` (e.g.
    ``"pseudo_label"``); the task runs that recipe's stages (:meth:`ssmd.tasks.base.Task.stages`).
    """

    uses_unlabeled: ClassVar[bool] = False
    recipe: ClassVar[str | None] = None
    defaults: ClassVar[dict[str, Any]] = {}
    requires: ClassVar[tuple[str, ...]] = ()
    requires_any: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @abc.abstractmethod
    def training_step(
        self, labeled: Batch, unlabeled: Batch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        """Losses of one step; must contain ``"loss"``, the total that is back-propagated."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (the student's)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Called after every optimiser step (e.g. an EMA teacher update)."""

    def augment_overrides(self) -> dict[str, Any]:
        """Keys of the config's ``augment`` section this method replaces (default: none).

        A method that applies an augmentation itself inside :meth:`training_step` (SSMD's
        shared rotation, Algorithm 1) switches the data pipeline's copy off here, so the
        targets are transformed once, as in the supervised baseline.
        """
        return {}

    def inference_model(self, which: str = "student") -> nn.Module:
        """The network used for prediction (``student`` by default, as in the SSMD paper)."""
        if which != "student":
            raise ValueError(f"{type(self).__name__} has no {which!r} network; use 'student'")
        return self.model


METHODS: Registry[type[Method]] = Registry("method")


def build_method(name: str, model: nn.Module, params: dict[str, Any] | None = None) -> Method:
    """Build the registered method ``name`` around ``model`` with ``params`` over its defaults.

    Raises:
        KeyError: unknown method (the message lists the known ones).
        ConfigError: ``model`` lacks a capability in the method's :attr:`Method.requires`
            (the message names the method, the detector and what is missing).
        ValueError: a parameter the method does not declare (``method.<key>``).
    """
    cls = METHODS.get(name)
    if cls.requires or cls.requires_any:
        have = detector_capabilities(model)
        runs = [n for n in METHODS.names() if _runs_on(METHODS.get(n), have)]
        check_capabilities(name, cls.requires, model, alternatives=runs)
        if cls.requires_any and not set(cls.requires_any) & have:
            check_capabilities(name, cls.requires_any[:1], model, alternatives=runs)
    return cls(model, **merged_method_params(name, cls.defaults, params))


def _runs_on(cls: type[Method], have: frozenset[str]) -> bool:
    return set(cls.requires) <= have and (
        not cls.requires_any or bool(set(cls.requires_any) & have)
    )


def merged_method_params(
    name: str, defaults: dict[str, Any], params: dict[str, Any] | None
) -> dict[str, Any]:
    """``params`` over a method's ``defaults``; ``"name"`` is ignored.

    Raises:
        ValueError: a parameter the method does not declare, named as ``method.<key>``.
    """
    params = dict(params or {})
    params.pop("name", None)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "(none)"
        raise ValueError(
            f"method {name!r} has no parameter(s) {', '.join('method.' + k for k in unknown)}; known: {known}"
        )
    return {**defaults, **params}
