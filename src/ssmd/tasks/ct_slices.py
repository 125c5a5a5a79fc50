"""CT-slice lesion detection: the LP paper's recipe (train -> propagate / mine -> retrain).

``method.name=label_propagation`` (:class:`ssmd.methods.slice_labels.SliceLabels`) names the
recipe ``ct_slices``; the detection task runs its three resumable stages:

1. **stage 1** (``<output_dir>/stage1``): the supervised detector (e.g.
   ``model.name=faster_rcnn_3dce``, FPN-3DCE) on the labeled key slices of the official split
   — the baseline. Skipped when finished, resumed from its ``last.pt``; ``method.stage1_dir``
   reuses a finished run (checked as in :mod:`ssmd.tasks.pseudo_label`).
2. **slice labels** (``<output_dir>/slice_labels.json``): stage 1's ``best.pt`` predicts the
   slices ``+-d`` (``method.neighbour_offsets``) of every labeled key slice and
   :func:`~ssmd.methods.slice_labels.propagate_labels` (Algorithm 1, ``method.propagate``)
   labels them; with ``method.mine`` it predicts every key slice and its two neighbours with
   the test-time ensemble (:func:`ssmd.models.tta.ensemble_predict`, ``method.tta_*``) and
   :func:`~ssmd.methods.slice_labels.mine_missing` (Algorithm 2) adds the missing boxes; with
   ``method.distill`` the paper's data-distillation baseline labels the same neighbour slices
   with the ensemble's detections of score ``>= method.distill_threshold`` (0.9). The
   file is COCO JSON (``bbox`` ``xywh`` in original pixels, ``score``) whose every annotation
   carries its ``provenance`` (algorithm, rule, key slice, offset, source predictions), plus
   ``stats``: counts and, where the dataset knows the hidden truth (the synthetic default),
   the precision and recall of the propagated and mined boxes at IoU >= 0.5.
3. **train** (``<output_dir>``): a fresh detector (same seed) on the key slices, whose labels
   are GT ∪ mined, and the propagated slices (those with at least one box) as labeled
   images; test metrics of ``<output_dir>/test_metrics.json`` hold stage 2's, with
   ``stage1`` (the baseline's) and ``slice_labels`` (the stats) beside them.

**Data.** ``data.format``: ``synthetic_slices``
(:class:`~ssmd.data.datasets.synthetic_slices.SyntheticSlicesDataset`; ``data.root`` or
``data.cache_dir`` = cache folder, ``data.synthetic.seed`` / ``image_size``,
``method.n_series``, ``method.unannotated_fraction``) or ``deeplesion``
(:class:`~ssmd.data.datasets.deeplesion.DeepLesionDataset`, ``data.root``), both read with
every slice as a sample (``slices="all"``) and ``method.num_neighbors`` (``k``: ``2k + 1``
channels, 4 -> 9 for 3DCE's 3 groups; ``data.mean`` / ``data.std`` need ``2k + 1`` values),
and split by their official (series-level) split (``split.labeled_ratio``, ``split.seed``).
Evaluation is the detection task's: COCO AP and the FROC sensitivities at ``eval.fp_rates``
(IoU >= 0.5) on the test key slices — the LP paper's Table 1 metric at 0.5, 1, 2, 4, 8 FPs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from ssmd.config import ConfigError
from ssmd.data.datasets.base import DetectionDataset
from ssmd.data.datasets.deeplesion import DeepLesionDataset
from ssmd.data.datasets.synthetic_slices import SyntheticSlicesConfig, SyntheticSlicesDataset
from ssmd.data.io import atomic_write_json
from ssmd.data.splits import Split
from ssmd.engine.loader import PreparedSamples
from ssmd.methods.base import merged_method_params
from ssmd.methods.slice_labels import SliceLabels, mine_missing, propagate_labels
from ssmd.models.predict import predict_samples
from ssmd.models.tta import ensemble_predict
from ssmd.structures.boxes import box_iou, clip_boxes, xyxy_to_xywh
from ssmd.tasks.base import RECIPES, Log, Stage
from ssmd.tasks.detection import (
    DataBundle,
    load_model,
    normalize_transform,
    prepare_transform,
    train_once,
)
from ssmd.tasks.pseudo_label import PseudoLabeledSamples, Stage1, stage1_config

__all__ = [
    "CTStage1",
    "Retrain",
    "SliceLabelStage",
    "box_quality",
    "ct_data",
    "ct_slices_stages",
    "neighbour_of",
    "recipe_params",
]

LP = "label_propagation"
MM = "missing_gt_mining"
DD = "data_distillation"


def recipe_params(config: dict[str, Any]) -> dict[str, Any]:
    """``config["method"]`` over :attr:`SliceLabels.defaults` (the recipe's parameters)."""
    return merged_method_params("label_propagation", SliceLabels.defaults, config["method"])


def ct_dataset(config: dict[str, Any]) -> DetectionDataset:
    """Every slice of ``data.format`` (module docstring) with ``2k + 1`` channels."""
    data, p = config["data"], recipe_params(config)
    k = int(p["num_neighbors"])
    fmt = data["format"]
    if fmt == "synthetic_slices":
        syn = data.get("synthetic") or {}
        size = syn.get("image_size", 128)
        if not isinstance(size, int):
            raise ConfigError(
                f"data.synthetic.image_size = {size!r}: synthetic_slices needs one integer side"
            )
        return SyntheticSlicesDataset(
            n_series=int(p["n_series"]),
            config=SyntheticSlicesConfig(image_size=size),
            seed=int(syn.get("seed", 0)),
            num_neighbors=k,
            unannotated_fraction=float(p["unannotated_fraction"]),
            cache_dir=data.get("root") or data.get("cache_dir"),
        )
    if fmt == "deeplesion":
        if not data.get("root"):
            raise ConfigError("data.root is required for data.format=deeplesion")
        return DeepLesionDataset(data["root"], num_neighbors=k, slices="all")
    raise ConfigError(
        f"data.format = {fmt!r}: method.name=label_propagation reads CT slice stacks, "
        "data.format synthetic_slices or deeplesion"
    )


def ct_data(config: dict[str, Any]) -> DataBundle:
    """Dataset, official split and prepared samples of a ``ct_slices`` config.

    Raises:
        ConfigError: ``data.mean`` / ``data.std`` without one value per channel.
    """
    dataset = ct_dataset(config)
    channels = 2 * int(recipe_params(config)["num_neighbors"]) + 1
    for key in ("mean", "std"):
        if len(config["data"][key]) != channels:
            raise ConfigError(
                f"data.{key} = {config['data'][key]!r}: the CT samples have {channels} channels "
                f"(method.num_neighbors = {(channels - 1) // 2}); give {channels} values"
            )
    sp = config["split"]
    split = dataset.official_split(float(sp["labeled_ratio"]), int(sp["seed"]))  # type: ignore[attr-defined]
    samples = PreparedSamples(
        dataset, prepare_transform(config["data"]), cache=bool(config["data"]["cache_images"])
    )
    return DataBundle(dataset, split, samples)


def neighbour_of(dataset: DetectionDataset, i: int, offset: int) -> int | None:
    """Index of the slice ``offset`` away from sample ``i`` in its series (``None``: none)."""
    finder = getattr(dataset, "neighbour_index", None)
    if callable(finder):
        return finder(i, offset)
    if isinstance(dataset, DeepLesionDataset):
        key = dataset.keys[i]
        name = f"Images_png/{key.series}/{key.slice_index + offset:03d}.png"
        return dataset._index.get(name)
    raise TypeError(f"{type(dataset).__name__} has no slice neighbours")


def box_quality(
    found: Sequence[Tensor], truth: Sequence[Tensor], iou: float = 0.5
) -> dict[str, Any]:
    """Precision and recall of boxes against a truth, image by image, at IoU >= ``iou``.

    A found box is correct if it overlaps some truth box of its image that much; a truth box
    is recalled if some found box does (no one-to-one matching: these are label sets).
    """
    n_found = n_truth = tp_found = tp_truth = 0
    for f, t in zip(found, truth, strict=True):
        n_found += len(f)
        n_truth += len(t)
        if len(f) and len(t):
            m = box_iou(f.float(), t.float())  # (F, T)
            tp_found += int((m.max(dim=1).values >= iou).sum())
            tp_truth += int((m.max(dim=0).values >= iou).sum())
    return {
        "boxes": n_found,
        "truth_boxes": n_truth,
        "precision": tp_found / n_found if n_found else None,
        "recall": tp_truth / n_truth if n_truth else None,
    }


def _data_key(config: dict[str, Any]) -> dict[str, Any]:
    """The recipe parameters that change stage 1's data (not in its supervised config)."""
    p = recipe_params(config)
    return {k: p[k] for k in ("num_neighbors", "n_series", "unannotated_fraction")}


class CTStage1(Stage1):
    """Stage 1 (the FPN-3DCE baseline) on the CT data of :func:`ct_data`.

    Stage 1's own config has ``method.name=supervised``, which drops the recipe's data
    parameters (``method.num_neighbors``, ``n_series``, ``unannotated_fraction``); they are
    written to ``<stage1>/ct_data.json`` and a reused stage 1 (``method.stage1_dir``, or a
    finished one) must match them.
    """

    def load(self, config: dict[str, Any], previous: dict[str, Any], log: Log) -> dict[str, Any]:
        path = self.output_dir(config) / "ct_data.json"
        theirs = json.loads(path.read_text()) if path.is_file() else None
        if theirs != _data_key(config):
            raise ValueError(
                f"{path}: {theirs!r} (missing: not a ct_slices stage 1), this recipe needs "
                f"{_data_key(config)!r}: stage 1 was trained on other data"
            )
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
        log(f"ct_slices: stage 1 (supervised on the labeled key slices) in {stage1_dir}")
        data = ct_data(config)
        stage1_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(stage1_dir / "ct_data.json", _data_key(config))
        return train_once(
            stage1_config(config), resume=last if last.is_file() else None, log=log, data=data
        )


def _labels_key(p: dict[str, Any]) -> dict[str, Any]:
    keys = ("propagate", "mine", "distill", "distill_threshold", "tau", "alpha", "adjacent_score", "neighbour_offsets",
            "tta_scales", "tta_hflip", "tta_nms", "num_neighbors")  # fmt: skip
    return {k: p[k] for k in keys}


def _tta(
    model: nn.Module, samples: Any, index: int, config: dict[str, Any], p: dict[str, Any]
) -> dict[str, Tensor]:
    sample = normalize_transform(config["data"])(samples[index])
    out = ensemble_predict(
        model,
        sample.image,
        None,
        scales=[float(s) for s in p["tta_scales"]],
        hflip=bool(p["tta_hflip"]),
        nms_iou=float(p["tta_nms"]),
    )
    out["boxes"] = clip_boxes(out["boxes"] / sample.scale, sample.orig_size)
    return out


def _no_boxes() -> tuple[Tensor, Tensor]:
    return torch.zeros((0, 4)), torch.zeros(0)


class SliceLabelStage(Stage):
    """Algorithms 1 and 2 on stage 1's predictions -> ``slice_labels.json`` (module docstring)."""

    name = "slice_labels"

    def output_dir(self, config: dict[str, Any]) -> Path:
        return Path(config["output_dir"])

    def marker(self, config: dict[str, Any]) -> Path:
        return self.output_dir(config) / "slice_labels.json"

    def done(self, config: dict[str, Any]) -> bool:
        path = self.marker(config)
        best = CTStage1().output_dir(config) / "best.pt"
        if not (path.is_file() and best.is_file()):
            return False
        try:
            info = json.loads(path.read_text()).get("info", {})
        except (OSError, json.JSONDecodeError):
            return False
        return (
            info.get("stage1_checkpoint") == str(best)
            and info.get("params") == _labels_key(recipe_params(config))
            and path.stat().st_mtime >= best.stat().st_mtime
        )

    def run(
        self,
        config: dict[str, Any],
        previous: dict[str, Any],
        resume: str | Path | None,
        log: Log,
    ) -> dict[str, Any]:
        p = recipe_params(config)
        tau, alpha = float(p["tau"]), float(p["alpha"])
        best = CTStage1().output_dir(config) / "best.pt"
        model, _ = load_model(best)
        data = ct_data(config)
        ds = data.dataset
        labeled = data.indices("labeled")
        hidden = getattr(ds, "hidden_annotation", None)
        anns: list[dict[str, Any]] = []
        stats: dict[str, Any] = {"labeled_key_slices": len(labeled)}

        def add(index: int, box: Tensor, score: float, provenance: dict[str, Any]) -> None:
            xywh = xyxy_to_xywh(box.reshape(1, 4))[0].tolist()
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": int(ds.records[index].image_id),
                    "category_id": 1,
                    "bbox": [round(v, 2) for v in xywh],
                    "area": round(xywh[2] * xywh[3], 2),
                    "iscrowd": 0,
                    "score": round(score, 4),
                    "provenance": provenance,
                }
            )

        pairs = []  # (key index, neighbour index, offset): the slices Algorithm 1 labels
        key_set = set(labeled)
        for i in labeled:
            for d in p["neighbour_offsets"]:
                for off in (int(d), -int(d)):
                    j = neighbour_of(ds, i, off)
                    if j is not None and j not in key_set:
                        pairs.append((i, j, off))
        if p["propagate"]:
            targets = sorted({j for _, j, _ in pairs})
            preds = predict_samples(
                model,
                data.samples,
                targets,
                batch_size=int(config["eval"]["batch_size"]),
                normalize=normalize_transform(config["data"]),
            )
            by_index = dict(zip(targets, preds, strict=True))
            found: dict[int, list[Tensor]] = {}
            truth: dict[int, list[Tensor]] = {}
            for i, j, off in pairs:
                gt, _ = ds.annotation(i)
                pr = by_index[j]
                keep, matched = propagate_labels(gt, pr["boxes"], tau)
                for q, g in zip(keep.tolist(), matched.tolist(), strict=True):
                    add(j, pr["boxes"][q], float(pr["scores"][q]), {
                        "algorithm": LP, "rule": f"IoU > {tau} with a GT box of the key slice",
                        "key_image_id": int(ds.records[i].image_id),
                        "key_file_name": ds.records[i].file_name, "offset": off,
                        "gt_index": int(g),
                    })  # fmt: skip
                found.setdefault(j, []).append(pr["boxes"][keep].reshape(-1, 4))
                if callable(hidden):
                    hb, hid = hidden(j)
                    mine = set(cast(Any, ds).annotated_lesions(i))
                    sel = [n for n, lid in enumerate(hid.tolist()) if lid in mine]
                    truth.setdefault(j, []).append(hb[sel].reshape(-1, 4))
            stats["propagation"] = {
                "pairs": len(pairs),
                "slices": len(targets),
                "slices_with_boxes": sum(1 for v in found.values() if sum(len(b) for b in v)),
            }
            if callable(hidden):
                order = sorted(found)
                stats["propagation"]["quality_vs_hidden_truth"] = box_quality(
                    [torch.cat(found[j]) for j in order], [torch.cat(truth[j]) for j in order]
                )
        if p["distill"]:
            thr = float(p["distill_threshold"])
            targets = sorted({j for _, j, _ in pairs})
            kept, everything = [], []
            for j in targets:
                out = _tta(model, data.samples, j, config, p)
                confident = out["scores"] >= thr
                for b, sc in zip(
                    out["boxes"][confident], out["scores"][confident].tolist(), strict=True
                ):
                    add(j, b, sc, {
                        "algorithm": DD, "rule": f"ensemble score >= {thr}",
                        "tta": {"scales": p["tta_scales"], "hflip": p["tta_hflip"]},
                    })  # fmt: skip
                kept.append(out["boxes"][confident].reshape(-1, 4))
                if callable(hidden):
                    everything.append(hidden(j)[0])
            stats["distillation"] = {"slices": len(targets), "boxes": sum(len(k) for k in kept)}
            if callable(hidden):
                stats["distillation"]["quality_vs_hidden_truth"] = box_quality(kept, everything)
        if p["mine"]:
            mined_all, missing_all = [], []
            deleted = 0
            for n, i in enumerate(labeled):
                up, lo = neighbour_of(ds, i, 1), neighbour_of(ds, i, -1)
                key = _tta(model, data.samples, i, config, p)
                u = _tta(model, data.samples, up, config, p) if up is not None else None
                lw = _tta(model, data.samples, lo, config, p) if lo is not None else None
                gt, _ = ds.annotation(i)
                res = mine_missing(
                    gt,
                    (key["boxes"], key["scores"]),
                    (u["boxes"], u["scores"]) if u else _no_boxes(),
                    (lw["boxes"], lw["scores"]) if lw else _no_boxes(),
                    alpha=alpha,
                    tau=tau,
                    adjacent_score=float(p["adjacent_score"]),
                )
                deleted += res.deleted
                for b, sc, src, orig in zip(
                    res.boxes, res.scores.tolist(), res.sources, res.origins, strict=True
                ):
                    add(i, b, sc, {
                        "algorithm": MM, "rule": src, "key_image_id": int(ds.records[i].image_id),
                        "key_file_name": ds.records[i].file_name, "predictions": list(orig),
                        "tta": {"scales": p["tta_scales"], "hflip": p["tta_hflip"]},
                    })  # fmt: skip
                mined_all.append(res.boxes)
                if callable(hidden):
                    hb, hid = hidden(i)
                    ann = set(cast(Any, ds).annotated_lesions(i))
                    missing_all.append(hb[[m not in ann for m in hid.tolist()]].reshape(-1, 4))
                if (n + 1) % 20 == 0:
                    log(f"ct_slices: mined {n + 1}/{len(labeled)} key slices")
            stats["mining"] = {
                "boxes": sum(len(b) for b in mined_all),
                "deleted_overlapping_gt": deleted,
            }
            if callable(hidden):
                stats["mining"]["quality_vs_hidden_truth"] = box_quality(mined_all, missing_all)
        image_ids = sorted({a["image_id"] for a in anns})
        by_id = {int(r.image_id): r for r in ds.records}
        record = {
            "info": {
                "description": "ssmd ct_slices: propagated (Algorithm 1) and mined (Algorithm 2) "
                "boxes of the LP paper; bbox xywh in original image pixels",
                "stage1_checkpoint": str(best),
                "params": _labels_key(p),
            },
            "images": [
                {
                    "id": i,
                    "file_name": by_id[i].file_name,
                    "width": by_id[i].width,
                    "height": by_id[i].height,
                }
                for i in image_ids
            ],
            "annotations": anns,
            "categories": [{"id": 1, "name": "lesion"}],
            "stats": stats,
        }
        log(f"ct_slices: slice labels {json.dumps(stats)}")
        atomic_write_json(self.marker(config), record)  # the marker, last
        return record


class Retrain(Stage):
    """A fresh detector on key slices (GT ∪ mined) and the propagated slices, in ``output_dir``."""

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
        stage1, record = previous[CTStage1.name], previous[SliceLabelStage.name]
        data = ct_data(config)
        ds = data.dataset
        id_to_index = {int(r.image_id): k for k, r in enumerate(ds.records)}
        extra: dict[int, list[list[float]]] = {}
        for a in record["annotations"]:
            x, y, w, h = a["bbox"]
            extra.setdefault(id_to_index[int(a["image_id"])], []).append([x, y, x + w, y + h])
        labeled = set(data.split.labeled)
        pseudo: dict[int, tuple[Tensor, Tensor]] = {}
        for index, rows in extra.items():
            boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
            name = ds.records[index].file_name
            if name in labeled:  # a key slice: GT ∪ mined (Algorithm 2, line 29)
                boxes = torch.cat([ds.annotation(index)[0], boxes])
            elif name not in data.split.unlabeled:
                raise ValueError(
                    f"{SliceLabelStage().marker(config)}: image {name} is not a train slice of "
                    "this split (delete the file to derive the labels again)"
                )
            pseudo[index] = (boxes, torch.ones(len(boxes), dtype=torch.int64))
        new_labeled = sorted(labeled | {ds.records[i].file_name for i in pseudo})
        sp = data.split
        split = Split(
            train=sp.train,
            val=sp.val,
            test=sp.test,
            labeled=new_labeled,
            unlabeled=sorted(set(sp.train) - set(new_labeled)),
            seed=sp.seed,
            ratios=dict(sp.ratios),
            excluded=sp.excluded,
        )
        split.validate("ct_slices augmented split")
        log(
            f"ct_slices: retraining on {len(labeled)} key slices + "
            f"{len(new_labeled) - len(labeled)} propagated slices"
        )
        bundle = DataBundle(ds, split, PseudoLabeledSamples(data.samples, pseudo))
        summary = train_once(config, resume=resume, log=log, data=bundle)
        summary["stage1"] = {
            "test": stage1.get("test", {}),
            "best_val": stage1.get("best_val"),
            "train_seconds": stage1.get("train_seconds"),
            "output_dir": str(CTStage1().output_dir(config)),
        }
        summary["slice_labels"] = record["stats"]
        summary["train_seconds_total"] = float(summary.get("train_seconds", 0.0)) + float(
            stage1.get("train_seconds") or 0.0
        )
        (self.output_dir(config) / "test_metrics.json").write_text(json.dumps(summary, indent=2))
        return summary


@RECIPES.register("ct_slices")
def ct_slices_stages(config: dict[str, Any]) -> list[Stage]:
    """Stage 1, slice labels, retraining (module docstring); checks the parameters first."""
    p = recipe_params(config)
    if not (p["propagate"] or p["mine"] or p["distill"]):
        raise ConfigError(
            "method.propagate, method.mine and method.distill are all false: "
            "label_propagation has nothing to add (use method.name=supervised for the baseline)"
        )
    if not 0.0 <= float(p["distill_threshold"]) <= 1.0:
        raise ConfigError(
            f"method.distill_threshold = {p['distill_threshold']!r}: expected a score in [0, 1]"
        )
    for key, lo, hi in (("tau", 0.0, 1.0), ("alpha", 0.0, 1.0), ("adjacent_score", 0.0, 1.0)):
        if not lo <= float(p[key]) <= hi:
            raise ConfigError(f"method.{key} = {p[key]!r}: expected a value in [{lo}, {hi}]")
    offsets = p["neighbour_offsets"]
    if not offsets or any(int(d) < 1 for d in offsets):
        raise ConfigError(f"method.neighbour_offsets = {offsets!r}: expected slice offsets >= 1")
    return [CTStage1(), SliceLabelStage(), Retrain()]
