"""The 2D detection task: config to data, detector, method and trainer; evaluation, prediction.

The model and the methods never read the config: everything here turns config keys
into constructor arguments (detectron2's rule). :func:`train_once` is one training run:
split, train with periodic validation, keep ``best.pt``, and evaluate the best model on the
test part. :func:`run_training` is the whole ``ssmd train`` job: for a method with a
multi-stage recipe (``Method.recipe``, e.g. pseudo-labeling) it runs that recipe's stages
(:mod:`ssmd.tasks.pseudo_label`), else :func:`train_once`. :class:`DetectionTask`
(registered as ``detection``) is what the CLI and ``ssmd experiment`` call.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from torch import Tensor, nn

from ssmd.config import DEFAULTS, TASK_DEFAULTS, ConfigError, dump_config
from ssmd.data import build_dataset
from ssmd.data.datasets.base import DetectionDataset
from ssmd.data.datasets.coco import to_coco_dict
from ssmd.data.factory import DATASET_FORMATS
from ssmd.data.splits import Split, make_split
from ssmd.data.transforms import (
    Compose,
    Normalize,
    RandomHFlip,
    RandomRotate,
    RandomSpatialCrop,
    RandomVFlip,
    Resize,
)
from ssmd.data.transforms.intensity import DarkBackground, RandomGrey, RandomStainJitter
from ssmd.data.transforms.scale import scale_policy_transform
from ssmd.engine.checkpoint import CheckpointError, load_checkpoint, network_weights
from ssmd.engine.hooks import standard_hooks
from ssmd.engine.loader import BatchStream, PreparedSamples
from ssmd.engine.optim import build_optimizer, build_scheduler, seed_everything
from ssmd.engine.resume import resume_trainer
from ssmd.engine.trainer import Trainer
from ssmd.evaluation import coco_ap, froc_from_coco, predictions_to_coco_results
from ssmd.methods import METHODS, Method, build_method
from ssmd.models.factory import model_from_config
from ssmd.models.layers.noisy_residual import strip_feature_perturbations
from ssmd.models.predict import predict_samples
from ssmd.structures.sample import Sample
from ssmd.tasks.base import TASKS, Log, Stage, Task, run_stages
from ssmd.utils.paths import prepare_output_dir
from ssmd.utils.registry import Registry

__all__ = [
    "DataBundle",
    "DetectionTask",
    "build_data",
    "build_model",
    "detection_stages",
    "evaluate_predictions",
    "load_model",
    "predict_dataset",
    "run_training",
    "train_once",
]


def dataset_from_config(data_cfg: dict[str, Any]) -> DetectionDataset:
    """The full dataset named by ``data.format`` / ``data.root`` (before splitting)."""
    fmt = data_cfg["format"]
    if fmt == "synthetic":
        syn = data_cfg.get("synthetic") or {}
        return build_dataset(
            "synthetic",
            None,
            n_images=int(syn.get("n_images", 400)),
            image_size=syn.get("image_size", 256),
            seed=int(syn.get("seed", 0)),
            cache_dir=data_cfg.get("cache_dir"),
        )
    if fmt not in DATASET_FORMATS:
        raise ConfigError(
            f"data.format = {fmt!r}: unknown format; known: {', '.join(DATASET_FORMATS.names())}"
        )
    if data_cfg.get("root") in (None, ""):
        raise ConfigError(
            f"data.root is required for data.format={fmt!r} (a folder, or a COCO JSON file)"
        )
    kwargs: dict[str, Any] = {}
    if fmt == "coco":
        kwargs["image_root"] = data_cfg.get("image_root")
    if fmt == "dsb2018" and data_cfg.get("cache_dir"):
        kwargs["cache_dir"] = data_cfg["cache_dir"]
    return build_dataset(fmt, data_cfg["root"], **kwargs)


def prepare_transform(data_cfg: dict[str, Any]) -> Callable[[Sample], Sample]:
    """The deterministic part: ``data.polarity``, then ``data.scale_policy`` (resize and pad
    to a multiple of 128)."""
    scale = scale_policy_transform(
        data_cfg.get("scale_policy", "longer_side"),
        int(data_cfg["input_size"]),
        float(data_cfg.get("scale", 1.0)),
        pad_to=128,
    )
    polarity = data_cfg.get("polarity", "none")
    if polarity == "none":
        return scale
    if polarity == "dark_background":
        return Compose([DarkBackground(), scale])
    raise ConfigError(f"data.polarity = {polarity!r}: expected none or dark_background")


def tiling(config: dict[str, Any]) -> dict[str, Any]:
    """``predict_samples`` keywords of ``eval.tile_size`` / ``eval.tile_overlap`` (0: whole images)."""
    ev = config["eval"]
    return {
        "tile_size": int(ev.get("tile_size", 0)),
        "tile_overlap": int(ev.get("tile_overlap", 64)),
    }


def normalize_transform(data_cfg: dict[str, Any]) -> Callable[[Sample], Sample]:
    """Per-dataset intensity normalisation ``(x - mean) / std``."""
    return Normalize(data_cfg["mean"], data_cfg["std"])


def augment_transform(config: dict[str, Any]) -> Callable[[Sample], Sample]:
    """Random augmentation of training samples (flip / rotation, as the SSMD supervised baseline), then normalise."""
    aug = config["augment"]
    steps: list[Callable[[Sample], Sample]] = []
    crop = int(config["data"].get("train_crop", 0))
    if crop % 128 or crop < 0:
        raise ConfigError(
            f"data.train_crop = {crop}: expected 0 (no crop) or a positive multiple of 128 "
            "(the detector's largest stride)"
        )
    if crop > 0:
        steps.append(RandomSpatialCrop(crop, min_visible=0.5))
    if float(aug.get("hflip", 0)) > 0:
        steps.append(RandomHFlip(float(aug["hflip"])))
    if float(aug.get("vflip", 0)) > 0:
        steps.append(RandomVFlip(float(aug["vflip"])))
    if float(aug.get("rotate", 0)) > 0:
        steps.append(RandomRotate(float(aug["rotate"])))
    if float(aug.get("stain_jitter", 0)) > 0:
        steps.append(RandomStainJitter(float(aug["stain_jitter"])))
    if float(aug.get("grey", 0)) > 0:
        steps.append(RandomGrey(float(aug["grey"])))
    steps.append(normalize_transform(config["data"]))
    return Compose(steps)


@dataclass
class DataBundle:
    """A dataset, its split, and prepared (resized, cached) samples."""

    dataset: DetectionDataset
    split: Split
    samples: PreparedSamples

    def indices(self, part: str) -> list[int]:
        """Dataset indices of one split part (``train``, ``val``, ``test``, ``labeled``, ``unlabeled``)."""
        return [self.dataset.index_of(n) for n in self.split.part(part)]  # type: ignore[arg-type]

    def gt(self, part: str) -> dict[str, Any]:
        """COCO ground truth of one split part, in original image pixels."""
        return to_coco_dict(self.dataset, self.indices(part))


def build_data(config: dict[str, Any], split: Split | None = None) -> DataBundle:
    """Dataset, split (``split``, else loaded from ``split.manifest``, else drawn) and samples."""
    dataset = dataset_from_config(config["data"])
    sp = config["split"]
    if split is not None:
        split.check_dataset(dataset)
    elif sp.get("manifest"):
        split = Split.from_json(sp["manifest"], dataset)
    elif sp.get("holdout_group"):
        from ssmd.data.groups import holdout_split, image_groups

        split = holdout_split(
            image_groups(dataset, config["data"].get("cache_dir")),
            str(sp["holdout_group"]),
            seed=int(sp["seed"]),
            val_fraction=float(sp["val"]),
            labeled_ratio=float(sp["labeled_ratio"]),
            unlabeled_fraction=float(sp.get("holdout_unlabeled", 0.0)),
        )
    else:
        count = sp.get("labeled_count")
        # a format with its own split rules says so with draw_split (BUSI: duplicate groups
        # on one side, only abnormal images strong); the others take make_split
        draw = getattr(dataset, "draw_split", None)
        split = (draw if callable(draw) else functools.partial(make_split, dataset))(
            seed=int(sp["seed"]),
            fractions=(float(sp["train"]), float(sp["val"]), float(sp["test"])),
            labeled_ratio=float(sp["labeled_ratio"]),
            labeled_count=None if count is None else int(count),
        )
    samples = PreparedSamples(
        dataset, prepare_transform(config["data"]), cache=bool(config["data"]["cache_images"])
    )
    return DataBundle(dataset, split, samples)


def build_model(model_cfg: dict[str, Any], num_classes: int) -> nn.Module:
    """The detector ``model.name`` (default ``retinanet``) from the ``model`` section.

    Dispatches through the model registry (:func:`ssmd.models.factory.model_from_config`):
    the registered builder turns the section's keys into constructor arguments.

    Raises:
        ConfigError: unknown ``model.name`` or a key the detector does not read.
    """
    return model_from_config(model_cfg, num_classes, shared=DEFAULTS["model"])


def evaluate_predictions(
    gt: dict[str, Any],
    predictions: list[dict[str, Any]],
    eval_cfg: dict[str, Any],
    label_to_category: dict[int, int] | None = None,
) -> dict[str, float]:
    """COCO AP/AR (and FROC sensitivities + CPM when ``eval.froc``) of per-image predictions."""
    results = predictions_to_coco_results(
        [p["image_id"] for p in predictions], predictions, label_to_category
    )
    metrics = coco_ap(gt, results, max_dets=int(eval_cfg["max_dets"]))
    has_lesions = any(not a.get("iscrowd", 0) for a in gt.get("annotations", []))
    if eval_cfg.get("froc", True) and has_lesions:  # FROC is undefined without lesions
        fr = froc_from_coco(
            gt,
            results,
            fp_rates=tuple(float(r) for r in eval_cfg["fp_rates"]),
            hit=eval_cfg.get("froc_hit", "iou"),
        )
        metrics.update(fr.to_dict())
    if has_lesions and any("image_label" in im for im in gt.get("images", [])):
        metrics.update(corloc_metrics(gt, results, int(eval_cfg.get("corloc_boot", 1000))))
    return metrics


def corloc_metrics(
    gt: dict[str, Any], results: list[dict[str, Any]], n_boot: int
) -> dict[str, float]:
    """CorLoc (class-aware and any-class, CI with ``n_boot`` resamples) and image AUCs.

    The numeric keys of :func:`ssmd.evaluation.corloc.corloc_report`; ``n_boot = 0`` gives
    CorLoc without its CI.
    """
    from ssmd.evaluation.corloc import corloc_report

    report = corloc_report(gt, results, n_boot=max(1, n_boot), seed=0)
    out: dict[str, float] = {}
    for key, value in report.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if n_boot == 0 and ("_ci_" in key or key.endswith("n_boot")):
            continue
        out[key] = float(value)
    return out


def _evaluate_part(
    method: Method, data: DataBundle, part: str, config: dict[str, Any], which: str = "student"
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    preds = predict_samples(
        method.inference_model(which),
        data.samples,
        data.indices(part),
        batch_size=int(config["eval"]["batch_size"]),
        normalize=normalize_transform(config["data"]),
        **tiling(config),
    )
    metrics = evaluate_predictions(
        data.gt(part), preds, config["eval"], data.dataset.label_to_category
    )
    return metrics, preds


def train_once(
    config: dict[str, Any],
    resume: str | Path | None = None,
    log: Callable[[str], None] = print,
    data: DataBundle | None = None,
) -> dict[str, Any]:
    """Train ``config`` end to end; returns the final test metrics and where things were written.

    Writes to ``output_dir``: ``config.yaml`` (resolved), ``split.json``, ``metrics.jsonl``,
    ``last.pt`` (resumable), ``best.pt`` (best validation ``eval.select_metric``),
    ``test_metrics.json`` and ``test_predictions.json`` (COCO results of the best model).

    This is one training run, whatever the method; :func:`run_training` runs a method's
    whole recipe (pseudo-labeling: stage 1, pseudo boxes, stage 2), whose training stages
    come here, the last one with ``data``, the data it prepared (the pseudo boxes).

    Args:
        config: a resolved detection config.
        resume: a ``last.pt`` to continue from.
        log: progress messages.
        data: the data to train on; default :func:`build_data` of ``config``.
    """
    out = prepare_output_dir(config["output_dir"])  # before the (slow) data loading
    seed_everything(int(config["seed"]))
    if data is None:
        data = build_data(config)
    dump_config(config, out / "config.yaml")
    data.split.to_json(out / "split.json")
    num_classes = max(1, data.dataset.num_classes)
    model = build_model(config["model"], num_classes)
    method_cfg = dict(config["method"])
    method = build_method(method_cfg.pop("name"), model, method_cfg)
    tcfg = config["train"]
    max_iters = int(tcfg["max_iters"])
    optimizer = build_optimizer(method.trainable_parameters(), tcfg)
    scheduler = build_scheduler(optimizer, tcfg)
    # a method that rotates inside its step (SSMD) turns the pipeline's rotation off
    augment = augment_transform(
        {**config, "augment": {**config["augment"], **method.augment_overrides()}}
    )
    batch = int(tcfg["batch_size"])
    seed = int(config["seed"])
    labeled = BatchStream(
        data.samples, data.indices("labeled"), batch, seed=seed, augment=augment, is_labeled=True
    )
    unlabeled = None
    if method.uses_unlabeled:
        ub = int(tcfg["unlabeled_batch_size"] or batch)
        unlabeled = BatchStream(
            data.samples,
            data.indices("unlabeled"),
            ub,
            seed=seed + 7919,
            augment=augment,
            is_labeled=False,
        )
    val_part = "val" if data.split.val else "test"
    # a method tuned on the labeled validation images (online_teacher), never on test
    set_validation = getattr(method, "set_validation_samples", None)
    if callable(set_validation):
        set_validation(
            data.samples,
            data.indices("val"),
            normalize_transform(config["data"]),
            int(config["eval"]["batch_size"]),
        )

    def evaluate(trainer: Trainer) -> dict[str, float]:
        return _evaluate_part(trainer.method, data, val_part, config)[0]

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
            "config": config,
            "split": data.split.to_dict(),
            "num_classes": num_classes,
            "categories": data.dataset.categories,
        },
    )
    if resume is not None:
        # the checkpoint's config must match (issue 24); a state that does not fit is named
        resume_trainer(trainer, resume, config, log)
        log(f"resumed from {resume} at step {trainer.step}")
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    best = load_checkpoint(out / "best.pt")
    method.model.load_state_dict(best["model"])
    test_metrics, test_preds = (
        _evaluate_part(method, data, "test", config) if data.split.test else ({}, [])
    )
    results = predictions_to_coco_results(
        [p["image_id"] for p in test_preds], test_preds, data.dataset.label_to_category
    )
    (out / "test_predictions.json").write_text(json.dumps(results))
    summary = {
        "test": test_metrics,
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


def run_training(
    config: dict[str, Any],
    resume: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``config`` end to end, all the stages of its method; returns the run's summary.

    A one-stage method is :func:`train_once`; a method with a recipe
    (:attr:`ssmd.methods.base.Method.recipe`, e.g. ``pseudo_label``) runs its stages
    (:func:`ssmd.tasks.base.run_stages`), ``resume`` going to the last one.
    """
    stages = detection_stages(config)
    if not stages:
        return train_once(config, resume=resume, log=log)
    prepare_output_dir(config["output_dir"])  # before the (slow) first stage
    return run_stages(stages, config, resume=resume, log=log)[stages[-1].name]


def detection_stages(config: dict[str, Any]) -> list[Stage]:
    """The stages of ``config``'s method recipe; ``[]`` for a one-stage method."""
    return TASKS.get("detection").stages(config)


def load_model(checkpoint: str | Path, which: str = "student") -> tuple[nn.Module, dict[str, Any]]:
    """A detector and its config from ``best.pt`` / ``last.pt`` (``weights_only`` loading).

    The detector is rebuilt by :func:`build_model` from the checkpoint's ``model`` section
    (``model.name``; checkpoints written before the key existed are RetinaNets).

    Args:
        checkpoint: a model checkpoint (``best.pt``) or a training checkpoint (``last.pt``).
        which: ``student`` or ``teacher`` (methods with an EMA teacher store both).
    """
    state = load_checkpoint(checkpoint)
    if "config" not in state:
        raise CheckpointError(f"{checkpoint}: field 'config' missing: not an ssmd checkpoint")
    config = state["config"]
    # the checkpoint's weights replace the initial ones: model.pretrained_weights is not re-read
    model = build_model(
        {**config["model"], "pretrained_weights": None}, int(state.get("num_classes", 1))
    )
    weights = network_weights(state, which, checkpoint)
    # feature-noise layers (noisy residual blocks, DropBlock) are identity at inference
    model.load_state_dict(strip_feature_perturbations(weights))
    model.eval()
    return model, state


def evaluate_checkpoint(
    checkpoint: str | Path, part: str = "test", which: str = "student", batch_size: int = 4
) -> dict[str, float]:
    """Metrics of a run's checkpoint on a part (``val`` / ``test``) of that run's own split.

    The dataset comes from the checkpoint's config and the split from the checkpoint itself,
    so the images are exactly the ones the run held out (``which``: student or teacher).

    Raises:
        CheckpointError: not a model checkpoint of a detection run, or it has no split.
    """
    model, state = load_model(checkpoint, which)
    if "split" not in state:
        raise CheckpointError(f"{checkpoint}: field 'split' missing: pass a dataset (SRC) instead")
    config = state["config"]
    data = build_data(config, Split.from_dict(state["split"], source=checkpoint))
    preds = predict_samples(
        model,
        data.samples,
        data.indices(part),
        batch_size=batch_size,
        normalize=normalize_transform(config["data"]),
        **tiling(config),
    )
    return evaluate_predictions(
        data.gt(part), preds, config["eval"], data.dataset.label_to_category
    )


def predict_dataset(
    model: nn.Module,
    config: dict[str, Any],
    dataset: DetectionDataset,
    batch_size: int = 4,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Predict every image of ``dataset`` with the resize/normalisation of the run's ``config``.

    Boxes come back in each image's original pixels; ``image_id`` is the dataset's.
    """
    samples = PreparedSamples(dataset, prepare_transform(config["data"]), cache=False)
    return predict_samples(
        model,
        samples,
        range(len(dataset)),
        batch_size=batch_size,
        normalize=normalize_transform(config["data"]),
        progress=progress,
        **tiling(config),
    )


class DetectionTask(Task):
    """2D detection (``task: detection``, the default): DSB 2018, COCO, BUSI, ... detectors."""

    name = "detection"

    @property
    def defaults(self) -> dict[str, Any]:
        return TASK_DEFAULTS[self.name]

    def build_data(self, config: dict[str, Any]) -> DataBundle:
        return build_data(config)

    def build_model(self, config: dict[str, Any], data: Any) -> nn.Module:
        return build_model(config["model"], max(1, data.dataset.num_classes))

    def build_method(self, config: dict[str, Any], model: nn.Module, data: Any) -> Method:
        method_cfg = dict(config["method"])
        return build_method(method_cfg.pop("name"), model, method_cfg)

    @property
    def methods(self) -> Registry[Any]:
        return METHODS

    def train(
        self, config: dict[str, Any], resume: str | Path | None = None, log: Log = print
    ) -> dict[str, Any]:
        return run_training(config, resume=resume, log=log)

    def evaluate_checkpoint(
        self, checkpoint: str | Path, part: str = "test", which: str = "student"
    ) -> dict[str, float]:
        return evaluate_checkpoint(checkpoint, part, which)

    def load_model(
        self, checkpoint: str | Path, which: str = "student"
    ) -> tuple[nn.Module, dict[str, Any]]:
        return load_model(checkpoint, which)

    def pretrain_images(
        self, config: dict[str, Any], part: str
    ) -> tuple[Callable[[int], Tensor], int, list[int], int]:
        """The split's images, longer side ``pretrain.image_size`` (default ``data.input_size``)."""
        bundle = build_data(config)
        total = len(bundle.dataset)
        indices = list(range(total)) if part == "all" else bundle.indices(part)
        size = int(config["pretrain"]["image_size"] or config["data"]["input_size"])
        samples = PreparedSamples(bundle.dataset, Resize(size, pad_to=1), cache=False)

        def load(i: int) -> Tensor:
            return samples[i].image  # (3, H', W'), longer side `size`

        return load, total, indices, 3

    def pretrain_trunk(
        self, config: dict[str, Any], in_channels: int
    ) -> tuple[nn.Module, list[int]]:
        """The detector's ``backbone`` (a ResNet returning ``C3, C4, C5``).

        Raises:
            ConfigError: a detector without a ResNet ``backbone`` with an ``arch``.
        """
        detector = build_model(config["model"], 1)
        backbone = getattr(detector, "backbone", None)
        if not isinstance(backbone, nn.Module) or not hasattr(backbone, "arch"):
            raise ConfigError(
                f"model.name = {config['model'].get('name')!r}: its detector has no ResNet "
                "'backbone' to pretrain"
            )
        return backbone, [int(c) for c in cast(Any, backbone).out_channels]

    def predict(self, checkpoint: str | Path, source: Any, **kwargs: Any) -> Any:
        """Per-image predictions of ``checkpoint`` (``which``) on a :class:`DetectionDataset`."""
        model, state = load_model(checkpoint, kwargs.pop("which", "student"))
        return predict_dataset(model, state["config"], source, **kwargs)


TASKS.register("detection")(DetectionTask())
