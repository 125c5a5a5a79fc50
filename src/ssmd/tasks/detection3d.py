"""The 3D detection task (``task: detection3d``, issue 22): CT volumes, a 3D RetinaNet, LUNA16 FROC.

A task of its own rather than a mode of the 2D ``detection`` task: the 2D task's pipeline
(resize to a longer side, pad to 128, COCO AP, tiles of 2D images) does not apply to volumes,
while everything below the task is shared -- the :class:`~ssmd.engine.trainer.Trainer`, its
hooks (logging, validation / ``best.pt``, ``last.pt``, resume), the
:class:`~ssmd.engine.loader.BatchStream`, the methods registry
(:data:`ssmd.methods.METHODS`; ``supervised`` runs on 3D batches as it is), the model
registry (``model.name: retinanet3d``) and the FROC machinery.

One run (:func:`train_once`): volumes are read, resampled to ``data.spacing`` mm, windowed
and normalised once and kept in memory; training draws patches of ``data.patch_size``
(:class:`~ssmd.data.transforms.patches3d.RandomPatch3d`: positives around a nodule with
probability ``data.pos_fraction``, else random; unlabeled volumes lose their boxes and get
random patches only) with random flips along x, y, z; validation
and test predict whole volumes by sliding windows
(:func:`~ssmd.models.sliding_window.sliding_window_detect`), turn the boxes into world
candidates and score them with LUNA16's rule (:func:`~ssmd.evaluation.luna16.luna16_froc`:
sensitivity at 1/8..8 FPs per scan, CPM; bootstrap CIs on the test part). The test
predictions are written as a LUNA16 submission CSV (``test_candidates.csv``) next to the
ground truth in LUNA16's annotation format (``test_annotations.csv``).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssmd.config import TASK_DEFAULTS, ConfigError, dump_config
from ssmd.data import build_dataset
from ssmd.data.datasets.base import DetectionDataset
from ssmd.data.datasets.luna16 import VolumeSample
from ssmd.data.splits import Split, make_split
from ssmd.data.transforms import Compose
from ssmd.data.transforms.patches3d import RandomFlip3d, RandomPatch3d
from ssmd.data.volumes.synthetic_ct import SyntheticCTConfig
from ssmd.data.volumes.volume import VolumeGeometry
from ssmd.engine.checkpoint import CheckpointError, load_checkpoint, network_weights
from ssmd.engine.hooks import standard_hooks
from ssmd.engine.loader import BatchStream, PreparedSamples
from ssmd.engine.optim import build_optimizer, build_scheduler, seed_everything
from ssmd.engine.resume import resume_trainer
from ssmd.engine.trainer import Trainer
from ssmd.evaluation.luna16 import (
    Luna16Result,
    detections_to_candidates,
    luna16_froc,
    write_submission,
)
from ssmd.methods import METHODS, Method, build_method
from ssmd.models.factory import model_from_config
from ssmd.models.sliding_window import sliding_window_detect
from ssmd.structures.sample import Sample
from ssmd.tasks.base import TASKS, Log, Task
from ssmd.utils.paths import prepare_output_dir
from ssmd.utils.registry import Registry

__all__ = [
    "Detection3DTask",
    "VolumeData",
    "build_data",
    "build_model",
    "evaluate_part",
    "load_model",
    "nodule_rows",
    "normalizer",
    "predict_candidates",
    "seriesuid_of",
    "train_once",
]

NAME = "detection3d"


def _triple(value: Any, key: str) -> tuple[int, int, int]:
    v = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(v) != 3 or any(int(x) != x or int(x) < 1 for x in v):
        raise ConfigError(f"config key {key} = {value!r}: expected 3 positive integers (D, H, W)")
    return int(v[0]), int(v[1]), int(v[2])


def dataset_from_config(data_cfg: dict[str, Any]) -> DetectionDataset:
    """The volumes of ``data.format`` (``synthetic_ct`` or ``luna16``), before splitting."""
    fmt = data_cfg["format"]
    spacing = data_cfg.get("spacing")
    if fmt == "synthetic_ct":
        syn = dict(data_cfg.get("synthetic") or {})
        lo, hi = syn.get("diameter_mm", (3.0, 30.0))
        config = SyntheticCTConfig(
            fov_mm=float(syn.get("fov_mm", 96.0)),
            max_nodules=int(syn.get("max_nodules", 3)),
            diameter_mm=(float(lo), float(hi)),
        )
        return build_dataset(
            "synthetic_ct",
            data_cfg.get("root") or data_cfg.get("cache_dir"),
            n_volumes=int(syn.get("n_volumes", 60)),
            seed=int(syn.get("seed", 0)),
            spacing=None if spacing is None else float(spacing),
            window=data_cfg.get("window", "luna16"),
            config=config,
        )
    if fmt == "luna16":
        if not data_cfg.get("root"):
            raise ConfigError("data.root is required for data.format='luna16' (a folder of .mhd)")
        return build_dataset(
            "luna16",
            data_cfg["root"],
            annotations=data_cfg.get("annotations"),
            spacing=spacing,
            window=data_cfg.get("window", "luna16"),
        )
    raise ConfigError(
        f"data.format = {fmt!r}: task detection3d reads 'synthetic_ct' or 'luna16' volumes"
    )


class _Normalize:
    """``(x - mean) / std`` of a volume sample (after its HU window)."""

    def __init__(self, mean: float, std: float) -> None:
        if not std > 0:
            raise ConfigError(f"config key data.std = {std!r}: expected a number > 0")
        self.mean, self.std = float(mean), float(std)

    def __call__(self, sample: Sample) -> Sample:
        return sample.replace(image=(sample.image - self.mean) / self.std)


@dataclass
class VolumeData:
    """A volume dataset, its split, and the prepared (normalised, in-memory) volumes."""

    dataset: DetectionDataset
    split: Split
    samples: PreparedSamples

    def indices(self, part: str) -> list[int]:
        """Dataset indices of one split part."""
        return [self.dataset.index_of(n) for n in self.split.part(part)]  # type: ignore[arg-type]


def build_data(config: dict[str, Any], split: Split | None = None) -> VolumeData:
    """Dataset, split (``split``, else ``split.manifest``, else drawn) and prepared volumes."""
    dataset = dataset_from_config(config["data"])
    sp = config["split"]
    if split is not None:
        split.check_dataset(dataset)
    elif sp.get("manifest"):
        split = Split.from_json(sp["manifest"], dataset)
    else:
        split = make_split(
            dataset,
            seed=int(sp["seed"]),
            fractions=(float(sp["train"]), float(sp["val"]), float(sp["test"])),
            labeled_ratio=float(sp["labeled_ratio"]),
        )
    return VolumeData(dataset, split, PreparedSamples(dataset, normalizer(config), cache=True))


def normalizer(config: dict[str, Any]) -> Callable[[Sample], Sample]:
    """``(x - data.mean) / data.std`` of a windowed volume sample."""
    return _Normalize(float(config["data"]["mean"]), float(config["data"]["std"]))


def build_model(config: dict[str, Any], num_classes: int) -> nn.Module:
    """The detector of ``model.name`` (default ``retinanet3d``) from the ``model`` section."""
    return model_from_config(config["model"], num_classes, shared=TASK_DEFAULTS[NAME]["model"])


def _drop_boxes(sample: Sample) -> Sample:
    """An unlabeled volume without its boxes (they must not steer anything, not even patches)."""
    empty = sample.boxes[:0]
    return sample.replace(boxes=empty, labels=sample.labels[:0], ignore=sample.ignore[:0])


def augment_transform(config: dict[str, Any], labeled: bool = True) -> Callable[[Sample], Sample]:
    """Training patches and flips (module docstring).

    Unlabeled volumes lose their boxes first and get random patches only
    (``pos_fraction = 0``): placing their patches around the nodules would hand the
    semi-supervised method the very labels it is not given.
    """
    data = config["data"]
    steps: list[Callable[[Sample], Sample]] = [] if labeled else [_drop_boxes]
    steps.append(
        RandomPatch3d(
            _triple(data["patch_size"], "data.patch_size"),
            pos_fraction=float(data["pos_fraction"]) if labeled else 0.0,
            min_visible=float(data["min_visible"]),
        )
    )
    flip = float(config["augment"].get("flip", 0.0))
    if flip > 0:
        steps.append(RandomFlip3d(flip))
    return Compose(steps)


def _geometry(sample: Sample) -> VolumeGeometry:
    if not isinstance(sample, VolumeSample):
        raise TypeError(f"task detection3d needs VolumeSamples, got {type(sample).__name__}")
    z, y, x = sample.spatial_size
    return VolumeGeometry((x, y, z), sample.spacing, sample.origin, sample.direction)


def nodule_rows(dataset: DetectionDataset, i: int) -> np.ndarray:
    """``(N, 4)`` world ``(x, y, z, diameter_mm)`` of the nodules of volume ``i``."""
    nodules = getattr(dataset, "nodules", None)  # SyntheticCTDataset / Luna16Dataset
    if not callable(nodules):
        raise ConfigError(
            f"data.format = {dataset.format_name!r}: its dataset lists no nodules (world centre "
            "and diameter), which LUNA16's evaluation needs"
        )
    rows = []
    for n in nodules(i):
        row = getattr(n, "nodule", n)  # Luna16's PlacedNodule wraps the CSV row
        rows.append([*row.center_world, row.diameter_mm])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def seriesuid_of(dataset: DetectionDataset, i: int) -> str:
    rec = dataset.records[i]
    return str(getattr(rec, "seriesuid", rec.file_name))


@torch.no_grad()
def predict_candidates(
    model: nn.Module, data: VolumeData, indices: Sequence[int], eval_cfg: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Seriesuid -> ``(P, 4)`` world ``(x, y, z, probability)`` of whole-volume predictions."""
    was_training = model.training
    model.eval()
    out: dict[str, np.ndarray] = {}
    try:
        for i in indices:
            sample = data.samples[i]
            det = sliding_window_detect(
                model,
                sample.image,
                _triple(eval_cfg["patch_size"], "eval.patch_size"),
                _triple(eval_cfg["overlap"], "eval.overlap"),
                batch_size=int(eval_cfg["batch_size"]),
                nms_thresh=float(eval_cfg["nms_thresh"]),
                detections=int(eval_cfg["detections"]),
            )
            out[seriesuid_of(data.dataset, i)] = detections_to_candidates(
                _geometry(sample), det["boxes"].numpy(), det["scores"].numpy()
            )
    finally:
        model.train(was_training)
    return out


def evaluate_part(
    model: nn.Module, data: VolumeData, part: str, config: dict[str, Any], n_boot: int = 0
) -> tuple[Luna16Result, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """LUNA16 FROC of ``model`` on a split part -> ``(result, candidates, nodules)``."""
    idx = data.indices(part)
    candidates = predict_candidates(model, data, idx, config["eval"])
    nodules = {seriesuid_of(data.dataset, i): nodule_rows(data.dataset, i) for i in idx}
    result = luna16_froc(
        nodules,
        candidates,
        fp_rates=tuple(float(r) for r in config["eval"]["fp_rates"]),
        n_boot=n_boot,
        seed=int(config["seed"]),
    )
    return result, candidates, nodules


def _write_annotations(path: Path, nodules: dict[str, np.ndarray]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"])
        for uid, rows in nodules.items():
            for x, y, z, d in rows:
                w.writerow([uid, repr(float(x)), repr(float(y)), repr(float(z)), repr(float(d))])


def train_once(
    config: dict[str, Any], resume: str | Path | None = None, log: Log = print
) -> dict[str, Any]:
    """Train and test one 3D run; returns the summary (also ``test_metrics.json``).

    Writes ``config.yaml``, ``split.json``, ``metrics.jsonl``, ``last.pt``, ``best.pt`` (best
    validation ``eval.select_metric``), ``test_metrics.json``, ``test_candidates.csv`` and
    ``test_annotations.csv`` (LUNA16 formats) to ``output_dir``.
    """
    out = prepare_output_dir(config["output_dir"])
    tcfg = config["train"]
    if tcfg.get("threads"):
        torch.set_num_threads(int(tcfg["threads"]))
    seed = int(config["seed"])
    seed_everything(seed)
    data = build_data(config)
    dump_config(config, out / "config.yaml")
    data.split.to_json(out / "split.json")
    num_classes = max(1, data.dataset.num_classes)
    model = build_model(config, num_classes)
    method_cfg = dict(config["method"])
    method = build_method(method_cfg.pop("name"), model, method_cfg)
    max_iters = int(tcfg["max_iters"])
    optimizer = build_optimizer(method.trainable_parameters(), tcfg)
    scheduler = build_scheduler(optimizer, tcfg)
    augment = augment_transform(config)
    batch = int(tcfg["batch_size"])
    labeled = BatchStream(
        data.samples, data.indices("labeled"), batch, seed=seed, augment=augment, is_labeled=True
    )
    unlabeled = None
    if method.uses_unlabeled:
        unlabeled = BatchStream(
            data.samples,
            data.indices("unlabeled"),
            int(tcfg["unlabeled_batch_size"] or batch),
            seed=seed + 7919,
            augment=augment_transform(config, labeled=False),
            is_labeled=False,
        )
    val_part = "val" if data.split.val else "test"
    for part in dict.fromkeys([val_part, "test"] if data.split.test else [val_part]):
        idx = data.indices(part)
        if idx and not any(len(nodule_rows(data.dataset, i)) for i in idx):
            raise ConfigError(
                f"split part {part!r} ({len(idx)} volumes) holds no nodule, so its FROC is "
                "undefined: use more volumes (data.synthetic.n_volumes) or another split.seed"
            )

    def evaluate(trainer: Trainer) -> dict[str, float]:
        return evaluate_part(trainer.method.inference_model(), data, val_part, config)[0].to_dict()

    hooks, eval_hook = standard_hooks(out, tcfg, evaluate, config["eval"]["select_metric"])
    trainer = Trainer(
        method,
        optimizer,
        scheduler,
        labeled,
        unlabeled,
        max_iters,
        hooks,
        grad_clip=float(tcfg["grad_clip"]) if tcfg.get("grad_clip") else None,
        extra_state={
            "task": NAME,
            "config": config,
            "split": data.split.to_dict(),
            "num_classes": num_classes,
            "categories": data.dataset.categories,
        },
    )
    if resume is not None:
        resume_trainer(trainer, resume, config, log)
        log(f"resumed from {resume} at step {trainer.step}")
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    best = load_checkpoint(out / "best.pt")
    method.model.load_state_dict(best["model"])
    test: dict[str, float] = {}
    if data.split.test:
        result, candidates, nodules = evaluate_part(
            method.inference_model(), data, "test", config, n_boot=int(config["eval"]["n_boot"])
        )
        test = result.to_dict()
        write_submission(out / "test_candidates.csv", candidates)
        _write_annotations(out / "test_annotations.csv", nodules)
    summary = {
        "test": test,
        "best_val": eval_hook.best,
        "best_step": eval_hook.best_step,
        "train_seconds": train_seconds,
        "max_iters": max_iters,
        "labeled_images": len(data.split.labeled),
        "unlabeled_images": len(data.split.unlabeled),
        "method": config["method"]["name"],
        "seed": seed,
        "output_dir": str(out),
    }
    (out / "test_metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_model(checkpoint: str | Path, which: str = "student") -> tuple[nn.Module, dict[str, Any]]:
    """The 3D detector of a ``best.pt`` / ``last.pt`` and the checkpoint state (eval mode)."""
    state = load_checkpoint(checkpoint)
    if "config" not in state:
        raise CheckpointError(f"{checkpoint}: field 'config' missing: not an ssmd checkpoint")
    if state["config"].get("task") != NAME:
        raise CheckpointError(
            f"{checkpoint}: field 'config.task' = {state['config'].get('task')!r}: not a "
            f"{NAME} checkpoint"
        )
    model = build_model(state["config"], int(state.get("num_classes", 1)))
    model.load_state_dict(network_weights(state, which, checkpoint))
    model.eval()
    return model, state


class Detection3DTask(Task):
    """3D detection (``task: detection3d``): synthetic CT / LUNA16 volumes, LUNA16 FROC."""

    name = NAME

    @property
    def defaults(self) -> dict[str, Any]:
        return TASK_DEFAULTS[NAME]

    def build_data(self, config: dict[str, Any]) -> VolumeData:
        return build_data(config)

    def build_model(self, config: dict[str, Any], data: Any) -> nn.Module:
        return build_model(config, max(1, data.dataset.num_classes))

    def build_method(self, config: dict[str, Any], model: nn.Module, data: Any) -> Method:
        method_cfg = dict(config["method"])
        return build_method(method_cfg.pop("name"), model, method_cfg)

    @property
    def methods(self) -> Registry[Any]:
        return METHODS

    def train(
        self, config: dict[str, Any], resume: str | Path | None = None, log: Log = print
    ) -> dict[str, Any]:
        return train_once(config, resume=resume, log=log)

    def evaluate_checkpoint(
        self, checkpoint: str | Path, part: str = "test", which: str = "student"
    ) -> dict[str, float]:
        """LUNA16 FROC of a checkpoint on a part of its own run's split."""
        model, state = load_model(checkpoint, which)
        if "split" not in state:
            raise CheckpointError(f"{checkpoint}: field 'split' missing")
        config = state["config"]
        data = build_data(config, Split.from_dict(state["split"], source=checkpoint))
        return evaluate_part(model, data, part, config)[0].to_dict()

    def load_model(
        self, checkpoint: str | Path, which: str = "student"
    ) -> tuple[nn.Module, dict[str, Any]]:
        return load_model(checkpoint, which)

    def predict(self, checkpoint: str | Path, source: Any, **kwargs: Any) -> Any:
        """World candidates of every volume of a dataset (``source``), by seriesuid."""
        model, state = load_model(checkpoint, kwargs.pop("which", "student"))
        config = state["config"]
        data = VolumeData(
            source, Split([], [], [], [], [], 0), PreparedSamples(source, normalizer(config), False)
        )
        return predict_candidates(model, data, range(len(source)), config["eval"])


TASKS.register(NAME)(Detection3DTask())
