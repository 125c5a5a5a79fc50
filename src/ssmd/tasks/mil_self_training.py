"""Self-training of the joint weakly- and semi-supervised detector (Shin et al., Table IV).

:class:`ssmd.methods.mil.MILSelfTraining` (``method.name=mil_self_training``) names this
recipe; its three stages, resumable one by one (:func:`~ssmd.tasks.base.run_stages`):

1. **initial**: the MIL detector (``method.name=mil`` with the same MIL parameters) in
   ``<output_dir>/initial``, or the finished run ``method.initial_dir``;
2. **selection**: the initial ``best.pt`` predicts the weak (unlabeled) training images. As
   the slides put it, "images with the highest classification probabilities coincident with
   the image-level label are automatically selected and moved to the strongly supervised set,
   along with the most confident detection as the GT MoI". Here: an abnormal weak image is a
   candidate when its most confident detection has the class of its image label; candidates
   are ranked by that detection's score (its class probability, the stand-in for
   ``P_l(I)``), and the best ``round(method.self_train_fraction * abnormal weak images)``
   are moved, with that one box (fewer when fewer agree; the count is logged). Normal weak
   images stay weak: they have no mass to box (the paper's weak set held none). Written to
   ``<output_dir>/self_training.json`` (boxes ``xyxy`` in original pixels, the score, and —
   for the record only, never used — whether the box hits a hidden ground-truth lesion at
   IoU >= 0.5, i.e. the precision of the moved boxes);
3. **retrain**: a fresh MIL detector (same seed) whose strong set is the strong images plus
   the moved ones (their boxes replaced by the selected box) and whose weak set is the rest,
   in ``<output_dir>`` (its ``split.json`` lists the new parts).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from ssmd.data.io import atomic_write_json
from ssmd.models.predict import predict_samples
from ssmd.structures.boxes import box_iou
from ssmd.tasks.base import RECIPES, Log, Stage, run_stages
from ssmd.tasks.detection import DataBundle, build_data, load_model, normalize_transform, train_once
from ssmd.tasks.pseudo_label import PseudoLabeledSamples

__all__ = [
    "Initial",
    "Retrain",
    "Selection",
    "initial_config",
    "mil_self_training_stages",
    "select_confident",
]

SELF_TRAIN_KEYS = ("self_train_fraction", "initial_dir")


def initial_config(config: dict[str, Any]) -> dict[str, Any]:
    """The initial MIL run: ``config`` with ``method.name=mil`` in ``<output_dir>/initial``."""
    cfg = copy.deepcopy(config)
    method = {k: v for k, v in cfg["method"].items() if k not in SELF_TRAIN_KEYS}
    method["name"] = "mil"
    cfg["method"] = method
    cfg["output_dir"] = str(Path(config["output_dir"]) / "initial")
    return cfg


def _fraction(config: dict[str, Any]) -> float:
    q = float(config["method"].get("self_train_fraction", 0.5))
    if not 0.0 < q <= 1.0:
        raise ValueError(f"method.self_train_fraction = {q!r}: must be in (0, 1]")
    return q


def select_confident(
    candidates: list[dict[str, Any]], fraction: float, n_abnormal: int
) -> list[dict[str, Any]]:
    """The moved images of stage 2 (module docstring).

    Args:
        candidates: per abnormal weak image ``{"index", "image_label", "label", "score",
            ...}`` of its most confident detection (``label`` ``None`` when it has none).
        fraction: share of the abnormal weak images to move.
        n_abnormal: number of abnormal weak images.

    Returns:
        The agreeing candidates (``label == image_label``) with the highest scores, at most
        ``round(fraction * n_abnormal)``, best first; ties keep input order.
    """
    agree = [c for c in candidates if c["label"] is not None and c["label"] == c["image_label"]]
    agree.sort(key=lambda c: -float(c["score"]))  # stable: ties keep input order
    return agree[: round(fraction * n_abnormal)]


class Initial(Stage):
    """The initial MIL detector, or the finished run ``method.initial_dir``."""

    name = "initial"

    def output_dir(self, config: dict[str, Any]) -> Path:
        given = config["method"].get("initial_dir")
        return Path(given) if given else Path(config["output_dir"]) / "initial"

    def marker(self, config: dict[str, Any]) -> Path:
        return self.output_dir(config) / "test_metrics.json"

    def run(
        self, config: dict[str, Any], previous: dict[str, Any], resume: str | Path | None, log: Log
    ) -> dict[str, Any]:
        if config["method"].get("initial_dir"):
            raise ValueError(
                f"method.initial_dir = {config['method']['initial_dir']!r} is not a finished "
                "run (no test_metrics.json)"
            )
        out = self.output_dir(config)
        last = out / "last.pt"
        log(f"mil_self_training: initial MIL detector in {out}")
        return train_once(initial_config(config), resume=last if last.is_file() else None, log=log)


class Selection(Stage):
    """Move the confident, agreeing weak images to the strong set (module docstring)."""

    name = "selection"

    def output_dir(self, config: dict[str, Any]) -> Path:
        return Path(config["output_dir"])

    def marker(self, config: dict[str, Any]) -> Path:
        return self.output_dir(config) / "self_training.json"

    def done(self, config: dict[str, Any]) -> bool:
        """Done when the record names the current initial ``best.pt``, is newer than it and
        has the configured fraction (else the selection runs again)."""
        path = self.marker(config)
        best = Initial().output_dir(config) / "best.pt"
        if not (path.is_file() and best.is_file()):
            return False
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return (
            record.get("initial_checkpoint") == str(best)
            and record.get("stats", {}).get("self_train_fraction") == _fraction(config)
            and path.stat().st_mtime >= best.stat().st_mtime
        )

    def run(
        self, config: dict[str, Any], previous: dict[str, Any], resume: str | Path | None, log: Log
    ) -> dict[str, Any]:
        fraction = _fraction(config)
        best = Initial().output_dir(config) / "best.pt"
        model, _ = load_model(best)
        data = build_data(config)
        weak = [i for i in data.indices("unlabeled") if data.dataset.image_class(i)]
        preds = predict_samples(
            model,
            data.samples,
            weak,
            batch_size=int(config["eval"]["batch_size"]),
            normalize=normalize_transform(config["data"]),
        )
        candidates = []
        for i, p in zip(weak, preds, strict=True):
            top = int(torch.argmax(p["scores"])) if len(p["scores"]) else None
            candidates.append(
                {
                    "index": i,
                    "image_id": int(data.dataset.records[i].image_id),
                    "file_name": data.dataset.file_names[i],
                    "image_label": data.dataset.image_class(i),
                    "label": None if top is None else int(p["labels"][top]),
                    "score": 0.0 if top is None else float(p["scores"][top]),
                    "box": None if top is None else [float(v) for v in p["boxes"][top]],
                }
            )
        moved = select_confident(candidates, fraction, len(weak))
        hits = 0
        for c in moved:  # for the record only: the hidden boxes are never trained on
            gt, _ = data.dataset.annotation(c["index"])
            iou = box_iou(torch.tensor([c["box"]]), gt.float()) if len(gt) else torch.zeros(1, 0)
            c["hits_hidden_gt"] = bool(iou.numel() and float(iou.max()) >= 0.5)
            hits += int(c["hits_hidden_gt"])
        agree = sum(1 for c in candidates if c["label"] == c["image_label"])
        stats = {
            "self_train_fraction": fraction,
            "abnormal_weak_images": len(weak),
            "agreeing": agree,
            "moved": len(moved),
            "moved_box_precision": hits / len(moved) if moved else 0.0,
        }
        log(
            f"mil_self_training: {agree}/{len(weak)} abnormal weak images' top detection has "
            f"the image's class; moved the {len(moved)} most confident to the strong set "
            f"({hits} of their boxes hit a hidden lesion at IoU >= 0.5)"
        )
        record = {
            "initial_checkpoint": str(best),
            "box_convention": "xyxy, original image pixels",
            "moved": [{k: v for k, v in c.items() if k != "index"} for c in moved],
            "stats": stats,
        }
        atomic_write_json(self.marker(config), record)  # the marker, last
        return record


class Retrain(Stage):
    """A fresh MIL detector on the enlarged strong set, in ``output_dir`` (the run itself)."""

    name = "train"

    def output_dir(self, config: dict[str, Any]) -> Path:
        return Path(config["output_dir"])

    def marker(self, config: dict[str, Any]) -> Path:
        return self.output_dir(config) / "test_metrics.json"

    def done(self, config: dict[str, Any]) -> bool:
        return False

    def run(
        self, config: dict[str, Any], previous: dict[str, Any], resume: str | Path | None, log: Log
    ) -> dict[str, Any]:
        record = previous[Selection.name]
        data = build_data(config)
        by_name = {n: i for i, n in enumerate(data.dataset.file_names)}
        moved = {str(m["file_name"]): m for m in record["moved"]}
        unknown = sorted(set(moved) - set(data.split.unlabeled))
        if unknown:
            raise ValueError(
                f"{Selection().marker(config)}: {unknown[0]} is not a weak image of this split "
                "(delete the file to select again)"
            )
        split = dataclasses.replace(
            data.split,
            labeled=sorted(set(data.split.labeled) | set(moved)),
            unlabeled=sorted(set(data.split.unlabeled) - set(moved)),
        )
        split.validate()
        pseudo = {
            by_name[n]: (
                torch.tensor([m["box"]], dtype=torch.float32),
                torch.tensor([int(m["label"])], dtype=torch.long),
            )
            for n, m in moved.items()
        }
        bundle = DataBundle(data.dataset, split, PseudoLabeledSamples(data.samples, pseudo))
        summary = train_once(config, resume=resume, log=log, data=bundle)
        initial = previous[Initial.name]
        summary["initial"] = {
            "test": initial.get("test", {}),
            "best_val": initial.get("best_val"),
            "output_dir": str(Initial().output_dir(config)),
        }
        summary["self_training"] = record["stats"]
        (self.output_dir(config) / "test_metrics.json").write_text(json.dumps(summary, indent=2))
        return summary


@RECIPES.register("mil_self_training")
def mil_self_training_stages(config: dict[str, Any]) -> list[Stage]:
    """Initial MIL run, selection, retraining (module docstring)."""
    _fraction(config)  # a bad fraction fails before the initial run trains
    return [Initial(), Selection(), Retrain()]


def run_mil_self_training(
    config: dict[str, Any], resume: str | Path | None = None, log: Log = print
) -> dict[str, Any]:
    """All stages of ``config`` (``method.name=mil_self_training``); the retrained summary."""
    return run_stages(mil_self_training_stages(config), config, resume=resume, log=log)[
        Retrain.name
    ]
