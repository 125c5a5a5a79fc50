"""The detector contract and the detector registry.

**Contract.** Every detector (:class:`Detector`) keeps its raw outputs apart from
post-processing, as torchvision's and MONAI's detectors do:

* ``forward(images) -> outputs``: raw predictions of a batch of normalised images
  ``Tensor[B, C, H, W]`` (padded by the data pipeline); ``outputs.rows(start, stop)`` gives the
  outputs of images ``start:stop`` (a method that forwards labeled and unlabeled images
  together computes their losses apart);
* ``loss(outputs, targets) -> {"loss_*": Tensor}``: the supervised losses against per-image
  targets ``{"boxes": Tensor[G, 4] xyxy pixels, "labels": Tensor[G] in 1..K}`` (``G = 0`` valid);
* ``postprocess(outputs, image_sizes=None) -> [{"boxes", "scores", "labels"}]``: detections,
  boxes ``xyxy`` in input pixels clipped to each image's unpadded ``(H, W)``;
* ``predict(images, image_sizes=None)``: ``postprocess(forward(images))`` without gradients.

**Capabilities** are what a training method may ask of a detector (:data:`CAPABILITIES`):
``"losses"`` (a ``loss``), ``"detections"`` (``postprocess`` and ``predict``) and
``"dense_maps"``, declared by ``provides_dense_maps = True``: ``forward`` returns
:class:`~ssmd.models.detectors.retinanet.DenseOutputs`, per-anchor class logits and box deltas
on every pyramid level, in the flat anchor order of ``anchors(outputs)`` — what the
consistency methods (CSD, SSMD, FocalMix) compare position by position; and
``"region_scores"``, declared by ``provides_region_scores = True``: ``forward(images,
with_roi=True)`` carries the RoI head's class logits over each image's proposals, with
gradients — what multiple-instance learning over image labels picks its "mass of interest"
from (:mod:`ssmd.methods.mil`). A method lists what
it needs in ``Method.requires``; :func:`check_capabilities` refuses a detector that lacks it.

**Registry.** A detector module registers a tiny builder with ``@MODELS.register("name")``
(timm style). A builder takes ``num_classes`` and the keys of the config's ``model`` section
as keyword-only parameters, turns them into constructor arguments and returns the detector;
the detector itself never reads a config (detectron2's rule).
:func:`ssmd.models.factory.model_from_config` matches a config section to a builder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from ssmd.config import ConfigError
from ssmd.utils.registry import Registry

__all__ = [
    "CAPABILITIES",
    "DENSE_MAPS",
    "DETECTIONS",
    "LOSSES",
    "MODELS",
    "REGION_SCORES",
    "Detector",
    "check_capabilities",
    "detector_capabilities",
]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
"""Detector builders by name; duplicate names are refused, unknown ones list the known."""

LOSSES = "losses"
DETECTIONS = "detections"
DENSE_MAPS = "dense_maps"
REGION_SCORES = "region_scores"
CAPABILITIES: dict[str, str] = {
    LOSSES: "loss(outputs, targets) -> dict of losses",
    DETECTIONS: "postprocess(outputs, image_sizes) and predict(images) -> boxes, scores, labels",
    DENSE_MAPS: "forward(images) -> DenseOutputs, per-anchor class logits and box deltas per "
    "pyramid level (provides_dense_maps = True)",
    REGION_SCORES: "forward(images, with_roi=True) -> outputs with roi_cls_logits (sum P_i, K + 1) "
    "over per-image proposals, class 0 = background, with gradients (provides_region_scores "
    "= True; multiple-instance learning over image labels)",
}
"""Capability name -> what it means (module docstring)."""


@runtime_checkable
class Detector(Protocol):
    """What every ssmd detector implements (module docstring)."""

    provides_dense_maps: bool

    def __call__(self, images: Tensor) -> Any: ...

    def loss(self, outputs: Any, targets: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]: ...

    def postprocess(
        self, outputs: Any, image_sizes: Sequence[Sequence[int]] | None = None
    ) -> list[dict[str, Tensor]]: ...

    def predict(
        self, images: Tensor, image_sizes: Sequence[Sequence[int]] | None = None
    ) -> list[dict[str, Tensor]]: ...


def detector_capabilities(model: object) -> frozenset[str]:
    """The :data:`CAPABILITIES` that ``model`` has."""
    caps = set()
    if callable(getattr(model, "loss", None)):
        caps.add(LOSSES)
    if callable(getattr(model, "postprocess", None)) and callable(getattr(model, "predict", None)):
        caps.add(DETECTIONS)
    if bool(getattr(model, "provides_dense_maps", False)):
        caps.add(DENSE_MAPS)
    if bool(getattr(model, "provides_region_scores", False)):
        caps.add(REGION_SCORES)
    return frozenset(caps)


def check_capabilities(
    method: str, requires: Iterable[str], model: object, alternatives: Iterable[str] = ()
) -> None:
    """Refuse a detector that lacks a capability a method needs.

    Args:
        method: the method's registered name (for the message).
        requires: the capabilities it needs (``Method.requires``).
        model: the detector.
        alternatives: methods whose needs ``model`` meets (named in the message).

    Raises:
        ConfigError: naming the method, the detector, what is missing and what it means.
    """
    needed = tuple(requires)
    unknown = sorted(set(needed) - set(CAPABILITIES))
    if unknown:
        raise ValueError(f"method {method!r} requires unknown capabilities {unknown}")
    have = detector_capabilities(model)
    missing = [c for c in needed if c not in have]
    if not missing:
        return
    what = "; ".join(f"{c}: {CAPABILITIES[c]}" for c in missing)
    others = ", ".join(alternatives)
    raise ConfigError(
        f"method.name={method!r} needs a detector with {', '.join(missing)} ({what}); "
        f"the detector {type(model).__name__} provides {', '.join(sorted(have)) or 'nothing'}"
        + (f" — methods that run on it: {others}" if others else "")
        + " (or choose model.name=retinanet)"
    )
