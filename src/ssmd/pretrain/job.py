"""The ``ssmd pretrain`` job: self-supervised pretraining of a run's backbone on its images.

A pretraining config is a training config (detection or ``task: classification``) plus a
``pretrain`` section. The training part says *what* to pretrain and *on what*: the trunk that
its ``model`` section builds (so the checkpoint fits that model by construction) and the images
of its ``data`` section, split exactly as ``ssmd train`` splits them (same ``split`` keys, same
code). The ``pretrain`` section says *how* (:data:`PRETRAIN_DEFAULTS`)::

    pretrain:
      part: unlabeled          # unlabeled (default) | train | all: which images (labels unused)
      method: {name: simclr}   # simclr | vicregl, with their own keys
      augment: {preset: microscopy, crop_size: 128}
      train: {max_iters: 500, batch_size: 32, lr: 0.001}
      output_dir: runs/pretrain/default

so ``ssmd pretrain --config configs/dsb2018_cpu.yaml split.labeled_ratio=0.1`` pretrains the
DSB detector's ResNet on the 90% of its training images that the 10% run treats as unlabeled.
Overrides ``pretrain.<key>=<value>`` go to the ``pretrain`` section, every other override to
the training part, as ``ssmd train`` reads it.

``part: unlabeled`` is the literal reading of "pretrain on unlabeled data, fine-tune on labeled
data" and the default. ``part: train`` (every training image, labels unused) is also fair — a
semi-supervised method sees the same pixels — and gives one backbone for all labeled ratios;
validation and test images are never used. For an image folder without a split, ``part: all``.

Outputs in ``pretrain.output_dir``: ``backbone.pt`` (an ``ssmd-backbone`` checkpoint, see
:mod:`ssmd.models.backbones.weights`: pass it as ``model.pretrained_weights``), ``config.yaml``
(resolved), ``metrics.jsonl``, ``last.pt`` (resumable with ``--resume``) and
``pretrain_summary.json`` (images, steps, seconds, seconds per 1,000 images, peak memory, the
loss at the start and the end).
"""

from __future__ import annotations

import copy
import json
import math
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from ssmd.config import ConfigError, apply_overrides, deep_merge, dump_config, load_config
from ssmd.engine.loader import PermutationSampler
from ssmd.engine.trainer import HookBase, Trainer
from ssmd.pretrain.base import PRETRAIN_METHODS, PretrainMethod, build_pretrain_method
from ssmd.pretrain.views import AUGMENT_KEYS, MultiViewAugment, ViewBatch, augment_from_config

__all__ = [
    "PARTS",
    "PRETRAIN_DEFAULTS",
    "ImageCache",
    "ViewStream",
    "build_pretrain_backbone",
    "load_pretrain_config",
    "pretrain_images",
    "run_pretraining",
]

PARTS = ("unlabeled", "train", "all")

PRETRAIN_DEFAULTS: dict[str, Any] = {
    "output_dir": "runs/pretrain/default",
    "seed": 0,
    # unlabeled | train (every training image, labels unused) | all (every image; image folders)
    "part": "unlabeled",
    # at most this many images of the part (a seeded choice; null: all)
    "max_images": None,
    # detection: longer image side before cropping (null: data.input_size, as fine-tuning sees)
    "image_size": None,
    # simclr | vicregl, plus the method's own keys (see ssmd.pretrain.simclr / vicregl)
    "method": {"name": "simclr"},
    # ssmd.pretrain.views: a modality preset, overridden key by key (null: the preset's value)
    "augment": {
        "preset": "microscopy",
        # view side (null: 128 for detection, data.image_size for classification)
        "crop_size": None,
        "scale": [0.2, 1.0],
        "ratio": [0.75, 1.3333333],
        "blur_sigma": [0.1, 2.0],
        **{
            k: None
            for k in AUGMENT_KEYS
            if k not in ("preset", "crop_size", "scale", "ratio", "blur_sigma")
        },
    },
    # the optimisation, with the keys of a training config's train section
    "train": {
        "max_iters": 500,
        "batch_size": 32,
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 1e-6,
        "momentum": 0.9,
        "schedule": "cosine",
        "step_at": 0.75,
        "gamma": 0.1,
        "warmup_iters": 20,
        "grad_clip": 10.0,
        "checkpoint_every": 100,
        "log_every": 10,
        "progress": True,
        "tensorboard": False,
    },
}
"""Every key of the ``pretrain`` section with its default (module docstring)."""

# integer keys and their minimum (None: any integer)
_INT_KEYS: dict[str, int | None] = {
    "seed": None,
    "max_images": 2,
    "image_size": 8,
    "train.max_iters": 1,
    "train.batch_size": 2,
    "train.warmup_iters": 0,
    "train.checkpoint_every": 0,
    "train.log_every": 0,
}
# number keys: (lower bound, bound allowed)
_FLOAT_KEYS: dict[str, tuple[float, bool]] = {
    "train.lr": (0.0, False),
    "train.weight_decay": (0.0, True),
    "train.momentum": (0.0, True),
    "train.step_at": (0.0, True),
    "train.gamma": (0.0, False),
}


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
    return loaded


def _check_section(section: dict[str, Any], where: str) -> dict[str, Any]:
    """Types and ranges of the ``pretrain`` section (messages name the key, value and source)."""
    out = copy.deepcopy(section)
    if out["part"] not in PARTS:
        raise ConfigError(f"{where}pretrain.part = {out['part']!r}: expected one of {PARTS}")
    name = (out.get("method") or {}).get("name")
    if name not in PRETRAIN_METHODS:
        raise ConfigError(
            f"{where}pretrain.method.name = {name!r}: unknown; known: {', '.join(PRETRAIN_METHODS.names())}"
        )
    for dotted, lo in _INT_KEYS.items():
        node, leaf = (out["train"], dotted[6:]) if dotted.startswith("train.") else (out, dotted)
        value = node[leaf]
        if value is None and dotted in ("max_images", "image_size"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or (lo is not None and value < lo):
            need = "an integer" + (f" >= {lo}" if lo is not None else "")
            raise ConfigError(f"{where}pretrain.{dotted} = {value!r}: expected {need}")
    for dotted, (low, inclusive) in _FLOAT_KEYS.items():
        leaf = dotted[6:]
        value = out["train"][leaf]
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if (
            isinstance(value, bool)
            or not math.isfinite(number)
            or (number < low if inclusive else number <= low)
        ):
            raise ConfigError(
                f"{where}pretrain.{dotted} = {value!r}: expected a number {'>=' if inclusive else '>'} {low:g}"
            )
        out["train"][leaf] = number
    return out


def load_pretrain_config(
    path: str | Path | None = None, overrides: Sequence[str] | None = None
) -> dict[str, Any]:
    """The training config of ``path`` (as ``ssmd train`` reads it) plus its ``pretrain`` section.

    Args:
        path: a training config with an optional ``pretrain`` section (``None``: defaults).
        overrides: ``key=value``; ``pretrain.<key>=...`` set the pretrain section, the others the
            training part.

    Raises:
        ConfigError: what :func:`ssmd.config.load_config` raises for the training part (with the
            file's own name), and an unknown key or a bad value of the ``pretrain`` section.
    """
    overrides = list(overrides or [])
    mine = [o for o in overrides if o.split("=", 1)[0].strip().startswith("pretrain.")]
    rest = [o for o in overrides if o not in mine]
    raw: dict[str, Any] = {}
    section: Any = {}
    if path is not None:
        raw = _read_yaml(Path(path))
        section = raw.pop("pretrain", None) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: pretrain must be a mapping, got {type(section).__name__}")
    if path is None:
        config = load_config(None, rest)
    else:
        # the training part goes through load_config itself (every check of `ssmd train`),
        # from a copy without the pretrain section; messages name the user's file
        with tempfile.TemporaryDirectory(prefix="ssmd-pretrain-") as tmp:
            copy_path = Path(tmp) / Path(path).name
            copy_path.write_text(yaml.safe_dump(raw, sort_keys=False))
            try:
                config = load_config(copy_path, rest)
            except ConfigError as exc:
                raise ConfigError(str(exc).replace(str(copy_path), str(path))) from None
    where = f"{path}: " if path is not None else ""
    method = section.pop("method", None) or {}
    if not isinstance(method, dict):
        raise ConfigError(f"{where}pretrain.method must be a mapping, got {method!r}")
    merged = deep_merge(
        {k: v for k, v in PRETRAIN_DEFAULTS.items() if k != "method"},
        section,
        strict=True,
        where="pretrain.",
        source=str(path or ""),
    )
    merged["method"] = {**PRETRAIN_DEFAULTS["method"], **method}
    for text in mine:  # applied to the section, reported as given
        inner = text.strip()[len("pretrain.") :]
        try:
            merged = apply_overrides(merged, [inner])
        except ConfigError as exc:
            key = inner.split("=", 1)[0].strip()
            raise ConfigError(
                str(exc)
                .replace(f"override {inner!r}", f"override {text!r}")
                .replace(f"key {key!r}", f"key {'pretrain.' + key!r}")
            ) from None
    config["pretrain"] = _check_section(merged, where)
    return config


# ---------------------------------------------------------------------------- images
class ImageCache:
    """Images of the pretraining part, read once and kept compactly.

    Args:
        load: ``i -> Tensor[C, H, W]`` in ``[0, 1]`` for dataset position ``i``.
        cache: keep what was read (uint8 when exact, as 8-bit sources are; else float16).
    """

    def __init__(self, load: Callable[[int], Tensor], cache: bool = True) -> None:
        self.load = load
        self.cache = cache
        self._store: dict[int, Tensor] = {}

    def __getitem__(self, index: int) -> Tensor:
        stored = self._store.get(index)
        if stored is not None:
            return stored.float().div_(255.0) if stored.dtype == torch.uint8 else stored.float()
        image = self.load(index).float()
        if self.cache:
            scaled = image * 255.0
            exact = bool(torch.equal(scaled, scaled.round()))
            self._store[index] = scaled.round().to(torch.uint8) if exact else image.half()
        return image

    def nbytes(self) -> int:
        """Bytes held by the cache."""
        return sum(t.numel() * t.element_size() for t in self._store.values())


def pretrain_images(config: dict[str, Any]) -> tuple[ImageCache, list[int], dict[str, Any]]:
    """The images of ``pretrain.part`` of the config's split, and what they are.

    Returns:
        ``(images, indices, info)``: a cache over dataset positions, the positions of the part
        (a seeded subset of at most ``pretrain.max_images``), and ``info`` (dataset size, part,
        image count, channels) for the summary.

    Raises:
        ConfigError: a part with fewer than 2 images.
    """
    pre = config["pretrain"]
    part = pre["part"]
    from ssmd.tasks import get_task

    load, total, indices, channels = get_task(config).pretrain_images(config, part)
    if pre["max_images"] is not None and len(indices) > int(pre["max_images"]):
        rng = np.random.default_rng(int(pre["seed"]))
        chosen = rng.permutation(len(indices))[: int(pre["max_images"])]
        indices = sorted(indices[i] for i in chosen)
    if len(indices) < 2:
        raise ConfigError(
            f"pretrain.part = {part!r} holds {len(indices)} image(s) of {total}: need at least 2 "
            "(with split.labeled_ratio=1.0 nothing is unlabeled: use pretrain.part=train)"
        )
    info = {"dataset_images": total, "part": part, "images": len(indices), "channels": channels}
    return ImageCache(load), sorted(indices), info


class ViewStream:
    """Endless shuffled batches of augmented views, resumable like the training streams.

    Each epoch is a fresh permutation from the stream's own generator; the remainder that does
    not fill a batch is dropped. The views' randomness is torch's global generator, which the
    trainer's checkpoints store.
    """

    def __init__(
        self,
        images: ImageCache,
        indices: Sequence[int],
        batch_size: int,
        seed: int,
        augment: MultiViewAugment,
    ) -> None:
        self.images = images
        self.sampler = PermutationSampler(indices, batch_size, seed, min_batch=2)
        self.augment = augment

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    def __iter__(self) -> ViewStream:
        return self

    def __next__(self) -> ViewBatch:
        idx = self.sampler.take()
        return self.augment([self.images[int(i)] for i in idx], idx)

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


# ---------------------------------------------------------------------------- model
def build_pretrain_backbone(
    config: dict[str, Any], in_channels: int
) -> tuple[nn.Module, list[int]]:
    """The trunk the config's ``model`` section builds, and the channels of its maps.

    Detection: the detector's ``backbone`` (a ResNet returning ``C3, C4, C5``); classification:
    the classifier's trunk (a ResNet's ``body``, or the DenseNet trunk). Starting weights are
    the model's own: random, or ``model.pretrained_weights`` when set.

    Raises:
        ConfigError: a detector without a ResNet ``backbone`` with an ``arch``.
    """
    from ssmd.tasks import get_task

    return get_task(config).pretrain_trunk(config, in_channels)


class _LossHistory(HookBase):
    """Keeps every step's total loss (for the summary's start / end values)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def after_step(self) -> None:
        self.losses.append(float(self.trainer.last_losses.get("loss", math.nan)))


def _window_mean(values: list[float], first: bool) -> float | None:
    if not values:
        return None
    n = max(1, len(values) // 10)
    chosen = values[:n] if first else values[-n:]
    return float(sum(chosen) / len(chosen))


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20  # KiB on Linux


def run_pretraining(
    config: dict[str, Any],
    resume: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Pretrain the config's backbone on ``pretrain.part`` and write ``backbone.pt`` (module
    docstring); returns the summary that ``pretrain_summary.json`` holds."""
    from ssmd.engine.hooks import CheckpointHook, LoggingHook
    from ssmd.engine.optim import build_optimizer, build_scheduler, seed_everything
    from ssmd.models.backbones.weights import backbone_arch, save_backbone_checkpoint

    pre = config["pretrain"]
    tcfg = pre["train"]
    out = Path(pre["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(int(pre["seed"]))
    images, indices, info = pretrain_images(config)
    start = time.perf_counter()
    for i in indices:  # read (and resize) every image once, before the timed steps
        images[i]
    load_seconds = time.perf_counter() - start
    backbone, channels = build_pretrain_backbone(config, int(info["channels"]))
    method_cfg = dict(pre["method"])
    method: PretrainMethod = build_pretrain_method(
        method_cfg.pop("name"), backbone, channels, method_cfg
    )
    aug_cfg = dict(pre["augment"])
    if aug_cfg.get("crop_size") is None:
        from ssmd.tasks import get_task

        aug_cfg["crop_size"] = get_task(config).pretrain_view_size(config)
    augment = augment_from_config(aug_cfg, config["data"]["mean"], config["data"]["std"])
    stream = ViewStream(images, indices, int(tcfg["batch_size"]), int(pre["seed"]), augment)
    dump_config(config, out / "config.yaml")
    optimizer = build_optimizer(method.trainable_parameters(), tcfg)
    scheduler = build_scheduler(optimizer, tcfg)
    history = _LossHistory()
    hooks: list[HookBase] = [
        LoggingHook(
            out,
            every=int(tcfg["log_every"]),
            progress=bool(tcfg["progress"]),
            tensorboard=bool(tcfg["tensorboard"]),
        ),
        history,
        CheckpointHook(out, every=int(tcfg["checkpoint_every"])),
    ]
    max_iters = int(tcfg["max_iters"])
    trainer = Trainer(
        method,
        optimizer,
        scheduler,
        cast(Any, stream),
        None,
        max_iters,
        hooks,
        grad_clip=float(tcfg["grad_clip"]) if tcfg.get("grad_clip") else None,
        extra_state={"task": "pretrain", "config": config},
    )
    if resume is not None:
        trainer.resume(resume)
        log(f"resumed from {resume} at step {trainer.step}")
    log(
        f"pretraining {type(method).__name__} on {info['images']} images ({pre['part']} part of "
        f"{info['dataset_images']}), {max_iters} steps of {stream.batch_size} x "
        f"{augment.n_views} views at {augment.crop_size} px -> {out / 'backbone.pt'}"
    )
    start_step = trainer.step
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    seen = (trainer.step - start_step) * stream.batch_size
    summary: dict[str, Any] = {
        **info,
        "method": method.describe(),
        "arch": backbone_arch(method.backbone),
        "steps": max_iters,
        "steps_this_call": trainer.step - start_step,
        "batch_size": stream.batch_size,
        "views": augment.n_views,
        "crop_size": augment.crop_size,
        "load_seconds": load_seconds,
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "seconds_per_1000_images": 1000.0 * seconds / seen if seen else None,
        "cpu_seconds_per_1000_images": 1000.0 * cpu_seconds / seen if seen else None,
        "cached_image_megabytes": images.nbytes() / 2**20,
        "peak_rss_megabytes": _peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "loss_start": _window_mean(history.losses, first=True),
        "loss_end": _window_mean(history.losses, first=False),
        "backbone": str(out / "backbone.pt"),
    }
    save_backbone_checkpoint(
        method.backbone,
        out / "backbone.pt",
        method=method.describe(),
        config=config,
        summary={k: v for k, v in summary.items() if v is not None},
    )
    (out / "pretrain_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    losses = " -> ".join(
        f"{v:.4f}" for v in (summary["loss_start"], summary["loss_end"]) if v is not None
    )
    log(
        f"wrote {out / 'backbone.pt'} ({seconds:.0f} s, loss {losses or 'n/a'}); fine-tune "
        f"with model.pretrained_weights={out / 'backbone.pt'}"
    )
    return summary
