"""The stages of pseudo-labeling (STAC-style; SSMD paper Sec. 4.3), from one config.

:class:`ssmd.methods.pseudo_label.PseudoLabel` names the recipe ``pseudo_label``; the
detection task runs its three :class:`~ssmd.tasks.base.Stage` objects (:func:`pseudo_label_stages`)
with :func:`~ssmd.tasks.base.run_stages`:

1. **stage 1**: the supervised detector on the labeled part (``method.name=supervised``,
   everything else as configured) in ``<output_dir>/stage1`` — skipped when its
   ``test_metrics.json`` exists, resumed from its ``last.pt`` when interrupted. With
   ``method.stage1_dir`` set, that finished run is stage 1 instead (e.g. the stage 1 of a run
   with another threshold, or the supervised run of the same split and seed): its
   ``config.yaml`` must equal this stage-1 config except for ``output_dir`` and logging keys
   (:func:`stage1_mismatch`), else the run stops naming the first differing field;
2. **pseudo labels**: its ``best.pt`` (best validation AP) predicts the unlabeled part;
   detections with ``score >= method.threshold`` (0.9) become one-hot boxes
   (:func:`filter_pseudo_labels`), written to ``<output_dir>/pseudo_labels.json`` in
   original-image pixels (``xyxy``);
3. **stage 2**: a fresh detector (same seed, so the same initialisation as stage 1) trained
   on the labeled images and the pseudo-labeled ones with strong augmentation
   (:class:`ssmd.methods.pseudo_label.PseudoLabel`) into ``<output_dir>``: the unlabeled
   images' boxes are replaced by their pseudo boxes (none where nothing passed the
   threshold) by :class:`PseudoLabeledSamples` — their ground truth never reaches training.

Stage 1 is skipped when finished; the pseudo boxes are read back from
``pseudo_labels.json`` when it was written from the current stage-1 ``best.pt`` (so a resumed
stage 2 trains on the same boxes); stage 2 is the run itself and always trains (resuming from
``resume`` when given), as a one-stage run does.

``test_metrics.json`` of ``<output_dir>`` holds stage 2's test metrics, plus ``stage1`` (its
test metrics) and ``pseudo_labels`` (counts).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from ssmd.data.io import atomic_write_json
from ssmd.engine.loader import PreparedSamples
from ssmd.models.predict import predict_samples
from ssmd.structures.boxes import clip_boxes
from ssmd.structures.sample import Sample
from ssmd.tasks.base import RECIPES, Log, Stage, run_stages
from ssmd.tasks.detection import (
    DataBundle,
    build_data,
    load_model,
    normalize_transform,
    train_once,
)

__all__ = [
    "PseudoBoxes",
    "PseudoLabeledSamples",
    "Stage1",
    "Stage2",
    "filter_pseudo_labels",
    "pseudo_label_stages",
    "run_pseudo_label",
    "stage1_config",
    "stage1_mismatch",
]

# keys that change what a run prints, not what it trains: ignored when comparing configs
_NOT_TRAINING = ("output_dir", "train.progress", "train.log_every", "train.tensorboard")


def filter_pseudo_labels(
    predictions: Sequence[dict[str, Any]], threshold: float = 0.9
) -> list[dict[str, Any]]:
    """Keep the detections with ``score >= threshold`` as one-hot pseudo labels.

    Args:
        predictions: per image ``{"image_id", "boxes" Tensor[M, 4] xyxy, "scores" Tensor[M],
            "labels" Tensor[M]}``.
        threshold: minimum score (inclusive).

    Returns:
        Per image ``{"image_id", "boxes" Tensor[M', 4], "labels" Tensor[M'] int64,
        "scores" Tensor[M']}``; the label is the detection's (arg-max) class, i.e. a one-hot
        target, and the score is kept for the record only.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"pseudo-label threshold must be in [0, 1], got {threshold}")
    out = []
    for p in predictions:
        keep = p["scores"] >= threshold
        out.append(
            {
                "image_id": p["image_id"],
                "boxes": p["boxes"][keep].float(),
                "labels": p["labels"][keep].long(),
                "scores": p["scores"][keep],
            }
        )
    return out


class PseudoLabeledSamples(PreparedSamples):
    """Prepared samples whose boxes are replaced by pseudo boxes for some indices.

    Args:
        samples: the run's prepared samples (:class:`PreparedSamples`: resized, padded), or
            any indexable of :class:`Sample`; read through, so its cache is shared.
        pseudo: dataset index -> ``(boxes Tensor[M, 4] xyxy in ORIGINAL pixels, labels)``;
            mapped to the prepared image with its ``scale``. Other indices pass through.
    """

    def __init__(self, samples: Any, pseudo: dict[int, tuple[Tensor, Tensor]]) -> None:
        super().__init__(getattr(samples, "dataset", samples), None, cache=False)
        self.samples = samples
        self.pseudo = pseudo

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        sample: Sample = self.samples[index]
        if index not in self.pseudo:
            return sample
        boxes, labels = self.pseudo[index]
        h, w = int(sample.image.shape[-2]), int(sample.image.shape[-1])
        scaled = clip_boxes(boxes * sample.scale, (h, w))  # (M, 4) prepared pixels
        ok = (scaled[:, 2:] > scaled[:, :2]).all(dim=1)
        return sample.replace(
            boxes=scaled[ok],
            labels=labels[ok],
            ignore=torch.zeros((0, 4), dtype=torch.float32),
            dropped_boxes=0,
        )


def stage1_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config of stage 1: ``config`` with ``method`` = supervised, in ``<output_dir>/stage1``."""
    cfg = copy.deepcopy(config)
    cfg["method"] = {"name": "supervised"}
    cfg["output_dir"] = str(Path(config["output_dir"]) / "stage1")
    return cfg


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def stage1_mismatch(config: dict[str, Any], run_dir: str | Path) -> str | None:
    """Why the run in ``run_dir`` cannot be stage 1 of ``config``; ``None`` when it can.

    It can when it finished (``best.pt`` and ``test_metrics.json``) and its ``config.yaml``
    equals :func:`stage1_config` of ``config`` except for ``output_dir`` and the logging keys
    ``train.progress``, ``train.log_every``, ``train.tensorboard``.
    """
    run = Path(run_dir)
    for name in ("config.yaml", "best.pt", "test_metrics.json"):
        if not (run / name).is_file():
            return f"{run / name} does not exist (not a finished run)"
    try:
        theirs = _flat(yaml.safe_load((run / "config.yaml").read_text()) or {})
        # runs from before model.name existed were RetinaNets
        theirs.setdefault("model.name", "retinanet")
    except yaml.YAMLError as exc:
        return f"{run / 'config.yaml'} is not valid YAML: {exc}"
    # the same YAML round trip as the run's own config.yaml (tuples -> lists, ...)
    ours = _flat(yaml.safe_load(yaml.safe_dump(stage1_config(config), sort_keys=False)))
    for key in sorted(set(ours) | set(theirs)):
        if key.startswith(_NOT_TRAINING):
            continue
        mine, other = ours.get(key, "<missing>"), theirs.get(key, "<missing>")
        if mine != other:
            return f"{run / 'config.yaml'}: {key} = {other!r}, stage 1 needs {mine!r}"
    return None


def _threshold(config: dict[str, Any]) -> float:
    threshold = float(config["method"].get("threshold", 0.9))
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"method.threshold = {threshold!r}: expected a score in [0, 1]")
    return threshold


class Stage1(Stage):
    """The supervised detector on the labeled part, or the finished run ``method.stage1_dir``."""

    name = "stage1"

    def output_dir(self, config: dict[str, Any]) -> Path:
        given = config["method"].get("stage1_dir")
        return Path(given) if given else Path(config["output_dir"]) / "stage1"

    def marker(self, config: dict[str, Any]) -> Path:
        return self.output_dir(config) / "test_metrics.json"

    def done(self, config: dict[str, Any]) -> bool:
        # a given stage1_dir is never trained here: load() checks it and names what is wrong
        return bool(config["method"].get("stage1_dir")) or super().done(config)

    def load(self, config: dict[str, Any], previous: dict[str, Any], log: Log) -> dict[str, Any]:
        stage1_dir = self.output_dir(config)
        given = config["method"].get("stage1_dir")
        if given:
            why = stage1_mismatch(config, stage1_dir)
            if why is not None:
                raise ValueError(f"method.stage1_dir = {str(given)!r} cannot be stage 1: {why}")
            log(f"pseudo_label: stage 1 is the finished run {stage1_dir} (method.stage1_dir)")
        else:
            log(f"pseudo_label: stage 1 already finished ({stage1_dir})")
        return super().load(config, previous, log)

    def run(
        self,
        config: dict[str, Any],
        previous: dict[str, Any],
        resume: str | Path | None,
        log: Log,
    ) -> dict[str, Any]:
        stage1_dir = self.output_dir(config)
        last = stage1_dir / "last.pt"
        log(f"pseudo_label: stage 1 (supervised on the labeled part) in {stage1_dir}")
        return train_once(stage1_config(config), resume=last if last.is_file() else None, log=log)


class PseudoBoxes(Stage):
    """Stage 1's ``best.pt`` detections with ``score >= method.threshold`` on the unlabeled part.

    Writes ``<output_dir>/pseudo_labels.json`` (boxes ``xyxy`` in original-image pixels, and
    ``stats``, the counts). It is reused when it names the current stage-1 checkpoint, is
    newer than it and has the same threshold.
    """

    name = "pseudo_labels"

    def output_dir(self, config: dict[str, Any]) -> Path:
        return Path(config["output_dir"])

    def marker(self, config: dict[str, Any]) -> Path:
        return self.output_dir(config) / "pseudo_labels.json"

    def done(self, config: dict[str, Any]) -> bool:
        path = self.marker(config)
        best = Stage1().output_dir(config) / "best.pt"
        if not (path.is_file() and best.is_file()):
            return False
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return (
            "stats" in record
            and record.get("stage1_checkpoint") == str(best)
            and record.get("threshold") == _threshold(config)
            and path.stat().st_mtime >= best.stat().st_mtime
        )

    def load(self, config: dict[str, Any], previous: dict[str, Any], log: Log) -> dict[str, Any]:
        record = super().load(config, previous, log)
        log(f"pseudo_label: pseudo boxes of {record['stage1_checkpoint']} ({self.marker(config)})")
        return record

    def run(
        self,
        config: dict[str, Any],
        previous: dict[str, Any],
        resume: str | Path | None,
        log: Log,
    ) -> dict[str, Any]:
        threshold = _threshold(config)
        out = self.output_dir(config)
        out.mkdir(parents=True, exist_ok=True)
        best = Stage1().output_dir(config) / "best.pt"
        model, _ = load_model(best)
        data = build_data(config)
        indices = data.indices("unlabeled")
        preds = predict_samples(
            model,
            data.samples,
            indices,
            batch_size=int(config["eval"]["batch_size"]),
            normalize=normalize_transform(config["data"]),
        )
        kept = filter_pseudo_labels(preds, threshold)
        n_boxes = [len(k["boxes"]) for k in kept]
        stats: dict[str, Any] = {
            "threshold": threshold,
            "images": len(kept),
            "images_with_boxes": sum(1 for n in n_boxes if n > 0),
            "boxes": sum(n_boxes),
            "detections_before_filter": sum(len(p["boxes"]) for p in preds),
        }
        labeled = data.indices("labeled")
        per_labeled = sum(len(data.dataset.annotation(i)[0]) for i in labeled) / max(
            len(labeled), 1
        )
        per_pseudo = stats["boxes"] / max(stats["images_with_boxes"], 1)
        stats.update(boxes_per_labeled_image=per_labeled, boxes_per_pseudo_labeled_image=per_pseudo)
        log(
            f"pseudo_label: {stats['boxes']} boxes with score >= {threshold} on "
            f"{stats['images_with_boxes']}/{stats['images']} unlabeled images "
            f"({per_pseudo:.1f} per kept image; the labeled images have {per_labeled:.1f})"
        )
        if stats["images_with_boxes"] == 0 or per_pseudo < 0.25 * per_labeled:
            # Every object of a kept image without a pseudo box is trained as background, so
            # sparse pseudo labels teach the detector to miss objects (focal-loss detectors
            # are under-confident: few scores reach STAC's 0.9).
            log(
                "pseudo_label: WARNING few stage-1 detections reach the threshold "
                f"{threshold}: stage 2 trains the unmarked objects of kept images as "
                "background. Look at the stage-1 score distribution "
                f"({out / 'pseudo_labels.json'}) and consider a lower method.threshold: "
                "benchmarks/pseudo_label_quality.py <stage1 run> --part val prints the "
                "precision and recall of stage-1 boxes per threshold on labeled images."
            )
        record = {
            "threshold": threshold,
            "stage1_checkpoint": str(best),
            "box_convention": "xyxy, original image pixels",
            "images": [
                {
                    "image_id": int(k["image_id"]),
                    "boxes": k["boxes"].tolist(),
                    "labels": k["labels"].tolist(),
                    "scores": k["scores"].tolist(),
                }
                for k in kept
            ],
            "stats": stats,
        }
        atomic_write_json(self.marker(config), record)  # the marker, last
        return record


class Stage2(Stage):
    """A fresh detector on the labeled images and the pseudo-labeled ones, in ``output_dir``.

    The run itself: it always trains (from ``resume`` when given), as a one-stage run does.
    """

    name = "train"

    def output_dir(self, config: dict[str, Any]) -> Path:
        return Path(config["output_dir"])

    def marker(self, config: dict[str, Any]) -> Path:
        return self.output_dir(config) / "test_metrics.json"

    def done(self, config: dict[str, Any]) -> bool:
        return False

    def run(
        self,
        config: dict[str, Any],
        previous: dict[str, Any],
        resume: str | Path | None,
        log: Log,
    ) -> dict[str, Any]:
        out = self.output_dir(config)
        stage1, record = previous[Stage1.name], previous[PseudoBoxes.name]
        data = build_data(config)
        indices = data.indices("unlabeled")
        images = record["images"]
        ids = [int(data.dataset.records[i].image_id) for i in indices]
        if ids != [int(im["image_id"]) for im in images]:
            raise ValueError(
                f"{PseudoBoxes().marker(config)}: its images are not this split's unlabeled "
                "part (delete it to predict the pseudo boxes again)"
            )
        pseudo = {
            i: (
                torch.tensor(im["boxes"], dtype=torch.float32).reshape(-1, 4),
                torch.tensor(im["labels"], dtype=torch.long).reshape(-1),
            )
            for i, im in zip(indices, images, strict=True)
        }
        data = DataBundle(data.dataset, data.split, PseudoLabeledSamples(data.samples, pseudo))
        summary = train_once(config, resume=resume, log=log, data=data)
        summary["stage1"] = {
            "test": stage1.get("test", {}),
            "best_val": stage1.get("best_val"),
            "train_seconds": stage1.get("train_seconds"),
            "output_dir": str(Stage1().output_dir(config)),
        }
        summary["pseudo_labels"] = record["stats"]
        summary["train_seconds_total"] = float(summary.get("train_seconds", 0.0)) + float(
            stage1.get("train_seconds") or 0.0
        )
        (out / "test_metrics.json").write_text(json.dumps(summary, indent=2))
        return summary


@RECIPES.register("pseudo_label")
def pseudo_label_stages(config: dict[str, Any]) -> list[Stage]:
    """Stage 1, pseudo boxes, stage 2 (module docstring); checks ``method.threshold`` first."""
    _threshold(config)  # a bad threshold fails before stage 1 trains
    return [Stage1(), PseudoBoxes(), Stage2()]


def run_pseudo_label(
    config: dict[str, Any], resume: str | Path | None = None, log: Log = print
) -> dict[str, Any]:
    """All stages of ``config`` (``method.name=pseudo_label``); returns stage 2's summary.

    Args:
        config: a resolved config with ``method.name=pseudo_label``.
        resume: stage 2's ``last.pt`` to continue from (stage 1 resumes by itself).
        log: progress messages.
    """
    return run_stages(pseudo_label_stages(config), config, resume=resume, log=log)[Stage2.name]
