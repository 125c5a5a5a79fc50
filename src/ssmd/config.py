"""Configuration: nested defaults, YAML files and ``key=value`` overrides.

A config is a plain nested ``dict``. :data:`DEFAULTS` declares every key a detection
run understands; a YAML file and command-line overrides (``train.max_iters=200``) are
merged on top. Unknown keys are errors that name the key and list the known ones,
so a typo cannot silently fall back to a default. Models and methods never read
the config: the task (:mod:`ssmd.tasks`) turns it into constructor arguments.

The ``method`` section is open: each method declares its own defaults (see
:mod:`ssmd.methods`), merged by :func:`resolve_method_section`. The ``model`` section is
open beyond :data:`DEFAULTS`: a detector (``model.name``) may read keys of its own, which
:func:`ssmd.models.factory.model_from_config` checks when the model is built.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CLASSIFICATION_DEFAULTS",
    "DEFAULTS",
    "DETECTION3D_DEFAULTS",
    "OPEN_SECTIONS",
    "TASK_DEFAULTS",
    "ConfigError",
    "apply_overrides",
    "deep_merge",
    "dump_config",
    "flatten_config",
    "load_config",
    "parse_override",
    "task_defaults",
    "validate_config",
]

DEFAULTS: dict[str, Any] = {
    "task": "detection",
    "seed": 0,
    "output_dir": "runs/default",
    "method": {"name": "supervised"},
    "data": {
        # dsb2018 | coco | synthetic
        "format": "synthetic",
        # folder (dsb2018), COCO JSON file (coco); unused for synthetic
        "root": None,
        # image folder for coco
        "image_root": None,
        # where generated/cached data live (synthetic images, DSB box cache)
        "cache_dir": None,
        "synthetic": {"n_images": 400, "image_size": 256, "seed": 0},
        # longer image side after resizing; padded to a multiple of 128
        "input_size": 256,
        # longer_side: resize to input_size (objects change size with the image);
        # native: keep each image's pixel grid times data.scale (issue 25)
        "scale_policy": "longer_side",
        "scale": 1.0,
        # random training crops of this side (0: whole images); a multiple of 128
        "train_crop": 0,
        # none | dark_background: invert bright-background images (one nucleus polarity)
        "polarity": "none",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        # keep resized images in memory (fast on CPU; disable for very large sets)
        "cache_images": True,
    },
    "split": {
        "train": 0.8,
        "val": 0.1,
        "test": 0.1,
        "labeled_ratio": 1.0,
        # exactly this many labeled (strong) images instead of labeled_ratio (e.g. the 10 / 50
        # strong images of weakly-and-semi-supervised BUSI runs); null: use labeled_ratio
        "labeled_count": None,
        # the train/val/test and labeled permutation seed, fixed so that every
        # training seed sees the same split
        "seed": 0,
        # load an existing manifest instead of drawing one
        "manifest": None,
        # hold one imaging-type group out as the test part (ssmd.data.groups; issue 25)
        "holdout_group": None,
        # fraction of the held-out group used as unlabeled training images
        "holdout_unlabeled": 0.0,
    },
    "model": {
        # a registered detector, see ssmd.models.MODELS.names() (e.g. retinanet)
        "name": "retinanet",
        "backbone": "resnet18",
        # "gn" (GroupNorm: same output in train and eval mode; on the synthetic CPU
        # config it doubles validation AP50 over BatchNorm, see docs/benchmarks.md) or
        # "bn" (BatchNorm, as the paper's ImageNet-pretrained ResNet)
        "backbone_norm": "gn",
        "width_multiplier": 0.25,
        "fpn_channels": 64,
        "head_convs": 2,
        # "gn" (GroupNorm in the head subnets) or null
        "head_norm": "gn",
        "anchor_sizes": [8, 16, 32, 64, 128],
        "activation": "softmax",
        "cls_loss": "focal",
        "pretrained_weights": None,
        "score_thresh": 0.05,
        "nms_thresh": 0.5,
        "topk_candidates": 1000,
        "detections_per_img": 300,
    },
    # stain_jitter: HED jitter sigma of colour images; grey: probability of a grey view
    # (ssmd.data.transforms.intensity; issue 25)
    "augment": {"hflip": 0.5, "vflip": 0.0, "rotate": 10.0, "stain_jitter": 0.0, "grey": 0.0},
    "train": {
        "max_iters": 1200,
        "batch_size": 4,
        # unlabeled images per step for semi-supervised methods (null = batch_size)
        "unlabeled_batch_size": None,
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "momentum": 0.9,
        # step | cosine | constant
        "schedule": "step",
        # step decay: multiply by gamma at this fraction of training (the SSMD paper: 0.75)
        "step_at": 0.75,
        "gamma": 0.1,
        "warmup_iters": 50,
        "grad_clip": 10.0,
        "eval_every": 300,
        "checkpoint_every": 300,
        "log_every": 10,
        "tensorboard": False,
        "progress": True,
    },
    "eval": {
        "max_dets": 1000,
        "froc": True,
        "fp_rates": [0.125, 0.25, 0.5, 1, 2, 4, 8],
        "froc_hit": "iou",
        # metric used to select best.pt
        "select_metric": "AP",
        "batch_size": 4,
        # predict images larger than this tile by tile (0: whole images); a multiple of 128
        "tile_size": 0,
        # overlap of neighbouring tiles: at least the largest object's size
        "tile_overlap": 64,
        # CorLoc (top-scoring detection per image, IoU >= 0.5, class-aware) with a bootstrap
        # CI of this many resamples, and the image-level AUC, when the ground truth has
        # image labels (BUSI); 0 turns the CI off (CorLoc itself is still reported)
        "corloc_boot": 1000,
    },
}


CLASSIFICATION_DEFAULTS: dict[str, Any] = {
    # selects these defaults instead of DEFAULTS (see load_config)
    "task": "classification",
    "seed": 0,
    "output_dir": "runs/classification",
    # supervised | mean_teacher | srcmt | stsc (ssmd.methods.classification)
    "method": {"name": "supervised"},
    "data": {
        # medmnist (.npz) | isic2018 (folder) | chestxray14 (folder) | synthetic_cls
        "format": "synthetic_cls",
        "root": None,
        # every image is resized to image_size x image_size (null: keep the file's size)
        "image_size": 32,
        # decoded-image cache (isic2018)
        "cache_dir": None,
        # intensity normalisation of [0, 1] images, one value per channel (or one for all)
        "mean": [0.5],
        "std": [0.25],
        "synthetic": {"n_images": 600, "num_classes": 3, "multi_label": False, "seed": 0},
    },
    "split": {
        # the STSC paper's 7 : 1 : 2 (ignored for MedMNIST's official parts)
        "train": 0.7,
        "val": 0.1,
        "test": 0.2,
        "labeled_ratio": 0.2,
        "seed": 0,
        "manifest": None,
        "use_predefined": True,
    },
    "model": {
        # resnet18 | resnet50 | densenet121 (torchvision trunks, random init)
        "backbone": "resnet18",
        "width_multiplier": 0.25,
        # 3x3 stride-1 stem without max-pool, for 28-64 px inputs
        "small_input": True,
        "dropout": 0.2,
        # a backbone written by `ssmd pretrain` (or a torchvision state dict at width 1)
        "pretrained_weights": None,
    },
    # the two views eta / eta' (ssmd.data.classification.augment.BatchAugment)
    "augment": {"hflip": 0.5, "vflip": 0.0, "rot90": False, "translate": 2, "noise": 0.1},
    "train": {
        "max_iters": 500,
        # labeled images per step
        "batch_size": 32,
        # unlabeled images per step for semi-supervised methods (null = batch_size)
        "unlabeled_batch_size": None,
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "momentum": 0.9,
        "schedule": "cosine",
        "step_at": 0.75,
        "gamma": 0.1,
        "warmup_iters": 0,
        "grad_clip": 10.0,
        "eval_every": 100,
        "checkpoint_every": 100,
        "log_every": 10,
        "tensorboard": False,
        "progress": True,
        # torch.set_num_threads for the run (null: leave torch's default)
        "threads": None,
    },
    "eval": {
        # metric of the validation part that selects best.pt
        "select_metric": "AUC",
        "batch_size": 256,
        # network evaluated: student or teacher (EMA methods)
        "model": "student",
        # multi-label decision threshold
        "threshold": 0.5,
    },
}


DETECTION3D_DEFAULTS: dict[str, Any] = {
    # selects these defaults instead of DEFAULTS (issue 22: 3D nodule detection)
    "task": "detection3d",
    "seed": 0,
    "output_dir": "runs/detection3d",
    "method": {"name": "supervised"},
    "data": {
        # synthetic_ct (generated, cached) | luna16 (root = folder of <seriesuid>.mhd)
        "format": "synthetic_ct",
        "root": None,
        # luna16: the annotations.csv (seriesuid,coordX,coordY,coordZ,diameter_mm)
        "annotations": None,
        # where synthetic volumes are kept
        "cache_dir": None,
        "synthetic": {
            "n_volumes": 60,
            "seed": 0,
            "fov_mm": 96.0,
            "max_nodules": 3,
            "diameter_mm": [3.0, 30.0],
        },
        # isotropic voxel size after loading, mm (LUNA16 pipelines resample too)
        "spacing": 1.5,
        # HU window to [0, 1] (ssmd.data.volumes.intensity.HU_WINDOWS)
        "window": "luna16",
        # (x - mean) / std after the window
        "mean": 0.2,
        "std": 0.2,
        # training patches (D, H, W), multiples of the detector's coarsest stride (16)
        "patch_size": [48, 48, 48],
        # probability of a patch around a nodule (else a random, mostly negative, patch)
        "pos_fraction": 0.5,
        # fraction of a box's volume inside a patch for it to be kept
        "min_visible": 0.5,
    },
    "split": {
        "train": 0.6,
        "val": 0.2,
        "test": 0.2,
        "labeled_ratio": 1.0,
        "seed": 0,
        "manifest": None,
    },
    "model": {
        "name": "retinanet3d",
        "widths": [16, 32, 64, 128],
        "blocks": [1, 1, 1],
        "fpn_channels": 32,
        "head_convs": 1,
        "anchor_sizes": [3, 6, 12],
        "score_thresh": 0.05,
        "nms_thresh": 0.1,
        "topk_candidates": 200,
        "detections_per_img": 100,
    },
    # probability of a flip along each of x, y, z
    "augment": {"flip": 0.5},
    "train": {
        "max_iters": 600,
        "batch_size": 2,
        "unlabeled_batch_size": None,
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "momentum": 0.9,
        "schedule": "step",
        "step_at": 0.75,
        "gamma": 0.1,
        "warmup_iters": 50,
        "grad_clip": 10.0,
        "eval_every": 200,
        "checkpoint_every": 200,
        "log_every": 20,
        "tensorboard": False,
        "progress": True,
        "threads": None,
    },
    "eval": {
        "fp_rates": [0.125, 0.25, 0.5, 1, 2, 4, 8],
        # metric of the validation part that selects best.pt
        "select_metric": "CPM",
        # sliding-window inference over whole volumes
        "patch_size": [64, 64, 64],
        "overlap": [16, 16, 16],
        "batch_size": 2,
        "nms_thresh": 0.1,
        "detections": 100,
        # bootstrap resamples of the test scans (LUNA16's script: 1000); 0 for none
        "n_boot": 1000,
    },
}


class ConfigError(ValueError):
    """A bad configuration value or key; the message names the file (if any), key and value."""


TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "detection": DEFAULTS,
    "classification": CLASSIFICATION_DEFAULTS,
    "detection3d": DETECTION3D_DEFAULTS,
}
"""The default config of each task, by the name a config's ``task`` key holds
(:attr:`ssmd.tasks.base.Task.defaults` reads it; the tables live here so that loading a
config needs no model code)."""


OPEN_SECTIONS: dict[str, tuple[str, ...]] = {
    "detection": ("method", "model"),
    "classification": ("method",),
    "detection3d": ("method", "model"),
}
"""Sections of each task's config that take keys beyond its defaults: every method declares
its own parameters, and a detector (``model.name``) its own model keys, checked when the
model is built. A classifier's model section is closed, so a typo fails at load."""


def task_defaults(task: Any) -> dict[str, Any]:
    """The default table of ``task``.

    Raises:
        ConfigError: no such task.
    """
    if not isinstance(task, str) or task not in TASK_DEFAULTS:
        raise ConfigError(f"task = {task!r}: expected {' or '.join(TASK_DEFAULTS)}")
    return TASK_DEFAULTS[task]


def deep_merge(
    base: dict[str, Any],
    update: dict[str, Any],
    *,
    strict: bool,
    where: str = "",
    source: str = "",
    open_sections: tuple[str, ...] = ("method", "model"),
) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``.

    Args:
        base: the defaults.
        update: values that win.
        strict: raise on keys absent from ``base`` (typos); the ``open_sections`` are
            merged non-strictly.
        where: dotted prefix for messages.
        source: file name for messages.
        open_sections: top-level sections that accept new keys (:data:`OPEN_SECTIONS`).
    """
    out = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f"{where}{key}"
        if key not in out:
            if strict and not dotted.startswith(tuple(f"{o}." for o in open_sections)):
                known = ", ".join(sorted(f"{where}{k}" for k in base))
                prefix = f"{source}: " if source else ""
                raise ConfigError(
                    f"{prefix}unknown config key {dotted!r} = {value!r}; known keys here: {known}"
                )
            out[key] = copy.deepcopy(value)
        elif isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = deep_merge(
                out[key],
                value,
                strict=strict,
                where=dotted + ".",
                source=source,
                open_sections=open_sections,
            )
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into ``(["a", "b", "c"], value)``; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(
            f"override {text!r} is not of the form key=value (e.g. train.max_iters=200)"
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value {raw!r} is not valid YAML: {exc}") from exc
    return key.split("."), value


def apply_overrides(
    config: dict[str, Any],
    overrides: list[str],
    open_sections: tuple[str, ...] = ("method", "model"),
) -> dict[str, Any]:
    """Apply ``key=value`` overrides; every key must already exist (except in ``open_sections``)."""
    out = copy.deepcopy(config)
    for text in overrides:
        parts, value = parse_override(text)
        node: dict[str, Any] = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None and parts[0] == "method":
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {text!r}: {'.'.join(parts[: i + 1])!r} is not a section"
                )
            node = child
        leaf = parts[-1]
        if leaf not in node and parts[0] not in open_sections:
            known = ", ".join(sorted(node))
            raise ConfigError(
                f"override {text!r}: unknown key {'.'.join(parts)!r}; known keys here: {known}"
            )
        node[leaf] = value
    return out


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides``.

    The defaults are :data:`DEFAULTS` (detection), or :data:`CLASSIFICATION_DEFAULTS` when
    the file or an override sets ``task: classification``.

    The result is checked by :func:`validate_config` (types and ranges), once, here.

    Raises:
        ConfigError: missing file, invalid YAML, a non-mapping document, an unknown key, or a
            value of the wrong type or out of range.
    """
    loaded: Any = None
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
    task = loaded.get("task", "detection") if loaded is not None else "detection"
    for text in overrides or []:
        parts, value = parse_override(text)
        if parts == ["task"]:
            task = value
    config = copy.deepcopy(task_defaults(task))
    open_sections = OPEN_SECTIONS[task]
    if loaded is not None:
        config = deep_merge(
            config, loaded, strict=True, source=str(path), open_sections=open_sections
        )
    if overrides:
        config = apply_overrides(config, overrides, open_sections)
    origin: dict[str, str] = {}
    if loaded is not None:
        origin.update(dict.fromkeys(flatten_config(loaded), str(path)))
    for text in overrides or []:
        origin[".".join(parse_override(text)[0])] = f"override {text!r}"
    return validate_config(config, origin)


# Keys whose default is a number but where ``null`` is meaningful.
_NULLABLE = frozenset({"train.grad_clip", "data.image_size"})
# Keys whose default is ``null`` but whose value, when given, must be an integer >= 1.
_OPTIONAL_POSITIVE_INT = frozenset({"train.unlabeled_batch_size", "train.threads"})
# Range checks: key -> (low, high, low inclusive, high inclusive); None = unbounded.
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "train.max_iters": (1, None, True, True),
    "train.batch_size": (1, None, True, True),
    "train.unlabeled_batch_size": (1, None, True, True),
    "train.threads": (1, None, True, True),
    "train.eval_every": (0, None, True, True),
    "train.checkpoint_every": (0, None, True, True),
    "train.log_every": (0, None, True, True),
    "train.warmup_iters": (0, None, True, True),
    "train.lr": (0, None, False, True),
    "train.weight_decay": (0, None, True, True),
    "train.momentum": (0, None, True, True),
    "train.gamma": (0, None, False, True),
    "train.step_at": (0, 1, True, True),
    "eval.batch_size": (1, None, True, True),
    "eval.max_dets": (1, None, True, True),
    "eval.corloc_boot": (0, None, True, True),
    "eval.threshold": (0, 1, True, True),
    "data.input_size": (1, None, True, True),
    "data.image_size": (1, None, True, True),
    "data.synthetic.n_images": (1, None, True, True),
    "data.synthetic.num_classes": (2, None, True, True),
    "split.train": (0, 1, True, True),
    "split.val": (0, 1, True, True),
    "split.test": (0, 1, True, True),
    "split.labeled_ratio": (0, 1, True, True),
    "split.labeled_count": (0, None, True, True),
    "model.width_multiplier": (0, None, False, True),
    "model.fpn_channels": (1, None, True, True),
    "model.head_convs": (0, None, True, True),
    "model.score_thresh": (0, 1, True, True),
    "model.nms_thresh": (0, 1, True, True),
    "model.topk_candidates": (1, None, True, True),
    "model.detections_per_img": (1, None, True, True),
    "model.dropout": (0, 1, True, False),
    "augment.hflip": (0, 1, True, True),
    "augment.vflip": (0, 1, True, True),
    "augment.noise": (0, None, True, True),
}


def flatten_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _as_number(value: Any, integer: bool) -> int | float | None:
    """``value`` as an int / finite float, or ``None`` if it is not one.

    YAML 1.1 reads ``1e-3`` (no dot) as a string, so numeric strings are accepted and
    converted; booleans are not numbers here (``true`` for ``train.lr`` is a mistake).
    """
    if isinstance(value, bool):
        return None
    number: float
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        number = value
    elif isinstance(value, str):
        try:
            return int(value.strip()) if integer else float(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return None
    else:
        return None
    if not math.isfinite(number):
        return None
    if integer:
        return int(number) if number.is_integer() else None
    return float(number)


def _range_error(key: str, value: Any, where: str) -> None:
    spec = _RANGES.get(key)
    if spec is None or value is None:
        return
    lo, hi, lo_in, hi_in = spec
    bad = (lo is not None and (value < lo if lo_in else value <= lo)) or (
        hi is not None and (value > hi if hi_in else value >= hi)
    )
    if bad:
        if lo is not None and hi is not None:
            want = f"in {'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"
        elif lo is not None:
            want = f"{'>=' if lo_in else '>'} {lo:g}"
        else:
            want = f"{'<=' if hi_in else '<'} {hi:g}"
        raise ConfigError(f"{where}config key {key} = {value!r}: must be {want}")


def validate_config(config: dict[str, Any], origin: dict[str, str] | None = None) -> dict[str, Any]:
    """Check every value against the type of its default and the known ranges.

    A key whose default (:data:`DEFAULTS`, or :data:`CLASSIFICATION_DEFAULTS` for
    ``task: classification``) is a bool, int or float must hold one: numbers written as
    strings (``1e-3``, which YAML 1.1 reads as a string) are converted, an integral float
    becomes an int; lists of numbers are checked element by element. Counts such as
    ``train.max_iters`` and ``train.batch_size`` must be >= 1, periods such as
    ``train.eval_every`` >= 0 (0: only at the end), fractions lie in [0, 1]. The open
    ``method`` section is left to the method (its keys are the method's own).

    Args:
        config: a merged config (defaults + file + overrides).
        origin: dotted key -> where it was set (the file, or ``override 'k=v'``), for messages.

    Returns:
        A copy with numeric strings and integral floats converted.

    Raises:
        ConfigError: naming the key, the value, what was expected and where it was set.
    """
    origin = origin or {}
    task = config.get("task", "detection")
    defaults = flatten_config(TASK_DEFAULTS.get(task, DEFAULTS))
    out = copy.deepcopy(config)
    for key, value in flatten_config(config).items():
        if key.startswith("method.") or key not in defaults:
            continue
        where = f"{origin[key]}: " if key in origin else ""
        default = defaults[key]
        if value is None and (key in _NULLABLE or default is None):
            continue
        new: Any = value
        if key in _OPTIONAL_POSITIVE_INT:
            new = _as_number(value, integer=True)
            if new is None:
                raise ConfigError(
                    f"{where}config key {key} = {value!r}: expected an integer or null"
                )
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}config key {key} = {value!r}: expected true or false")
        elif isinstance(default, (int, float)):
            integer = isinstance(default, int)
            if key == "data.synthetic.image_size" and isinstance(value, list):
                if len(value) != 2 or any(_as_number(v, True) is None for v in value):
                    raise ConfigError(
                        f"{where}config key {key} = {value!r}: expected an integer or [H, W]"
                    )
                continue
            new = _as_number(value, integer)
            if new is None:
                kind = "an integer" if integer else "a finite number"
                raise ConfigError(f"{where}config key {key} = {value!r}: expected {kind}")
        elif (
            isinstance(default, list)
            and default
            and all(_as_number(v, False) is not None for v in default)
        ):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(
                    f"{where}config key {key} = {value!r}: expected a list of numbers"
                )
            new = []
            for i, item in enumerate(value):
                number = _as_number(item, integer=False)
                if number is None:
                    raise ConfigError(
                        f"{where}config key {key}[{i}] = {item!r}: expected a number ({key} = {value!r})"
                    )
                new.append(item if isinstance(item, (int, float)) else number)
        else:
            continue
        _range_error(key, new, where)
        if new is not value:
            node = out
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = new
    return out


def dump_config(config: dict[str, Any], path: str | Path) -> None:
    """Write the resolved config as YAML (next to every run's outputs)."""
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
