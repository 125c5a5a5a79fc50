"""The two stages of pseudo-labeling (STAC-style; SSMD paper Sec. 4.3), from one config.

``run_training(config)`` with ``method.name=pseudo_label`` lands in :func:`run_pseudo_label`:

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

``test_metrics.json`` of ``<output_dir>`` holds stage 2's test metrics, plus ``stage1`` (its
test metrics) and ``pseudo_labels`` (counts).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from ssmd.engine.build import (
    DataBundle,
    load_model,
    normalize_transform,
    run_training,
)
from ssmd.engine.loader import PreparedSamples
from ssmd.engine.predict import predict_samples
from ssmd.structures.boxes import clip_boxes
from ssmd.structures.sample import Sample

__all__ = [
    "PseudoLabeledSamples",
    "filter_pseudo_labels",
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


def run_pseudo_label(
    config: dict[str, Any], resume: str | Path | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Stage 1, pseudo labels and stage 2 (module docstring); returns stage 2's summary.

    Args:
        config: a resolved config with ``method.name=pseudo_label``.
        resume: stage 2's ``last.pt`` to continue from (stage 1 resumes by itself).
        log: progress messages.
    """
    out = Path(config["output_dir"])
    threshold = float(config["method"].get("threshold", 0.9))
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"method.threshold = {threshold!r}: expected a score in [0, 1]")
    given = config["method"].get("stage1_dir")
    stage1_dir = Path(given) if given else out / "stage1"
    done = stage1_dir / "test_metrics.json"
    if given:
        why = stage1_mismatch(config, stage1_dir)
        if why is not None:
            raise ValueError(f"method.stage1_dir = {str(given)!r} cannot be stage 1: {why}")
        stage1 = json.loads(done.read_text())
        log(f"pseudo_label: stage 1 is the finished run {stage1_dir} (method.stage1_dir)")
    elif done.is_file():
        stage1 = json.loads(done.read_text())
        log(f"pseudo_label: stage 1 already finished ({stage1_dir})")
    else:
        last = stage1_dir / "last.pt"
        log(f"pseudo_label: stage 1 (supervised on the labeled part) in {stage1_dir}")
        stage1 = run_training(
            stage1_config(config), resume=last if last.is_file() else None, log=log
        )
    model, _ = load_model(stage1_dir / "best.pt")
    stats: dict[str, Any] = {"threshold": threshold}

    def inject(data: DataBundle) -> DataBundle:
        indices = data.indices("unlabeled")
        preds = predict_samples(
            model,
            data.samples,
            indices,
            batch_size=int(config["eval"]["batch_size"]),
            normalize=normalize_transform(config["data"]),
        )
        kept = filter_pseudo_labels(preds, threshold)
        pseudo = {i: (k["boxes"], k["labels"]) for i, k in zip(indices, kept, strict=True)}
        n_boxes = [len(k["boxes"]) for k in kept]
        stats.update(
            images=len(kept),
            images_with_boxes=sum(1 for n in n_boxes if n > 0),
            boxes=sum(n_boxes),
            detections_before_filter=sum(len(p["boxes"]) for p in preds),
        )
        (out / "pseudo_labels.json").write_text(
            json.dumps(
                {
                    "threshold": threshold,
                    "stage1_checkpoint": str(stage1_dir / "best.pt"),
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
                }
            )
        )
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
        return DataBundle(data.dataset, data.split, PseudoLabeledSamples(data.samples, pseudo))

    out.mkdir(parents=True, exist_ok=True)
    summary = run_training(config, resume=resume, log=log, data_hook=inject)
    summary["stage1"] = {
        "test": stage1.get("test", {}),
        "best_val": stage1.get("best_val"),
        "train_seconds": stage1.get("train_seconds"),
        "output_dir": str(stage1_dir),
    }
    summary["pseudo_labels"] = stats
    summary["train_seconds_total"] = float(summary.get("train_seconds", 0.0)) + float(
        stage1.get("train_seconds") or 0.0
    )
    (out / "test_metrics.json").write_text(json.dumps(summary, indent=2))
    return summary
