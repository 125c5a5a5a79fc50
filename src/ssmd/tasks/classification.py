"""The classification task: data, split, classifier, method, training, evaluation.

:func:`run_classification_training` is ``ssmd train`` for ``task: classification`` (and what
``ssmd experiment`` calls per run, through :class:`ClassificationTask`). It reuses the detection engine's
:class:`ssmd.engine.trainer.Trainer`, its hooks (progress bar with ETA and ``metrics.jsonl``,
``last.pt`` every ``train.checkpoint_every`` steps, validation with ``best.pt``) and its
atomic, ``weights_only``-loadable checkpoints; only the batch streams and the evaluation are
classification-specific.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from ssmd.config import TASK_DEFAULTS, ConfigError, dump_config
from ssmd.data.classification import (
    ClassificationDataset,
    build_classification_dataset,
    make_classification_split,
)
from ssmd.data.classification.augment import BatchAugment
from ssmd.data.classification.base import CLASSIFICATION_FORMATS
from ssmd.data.splits import Split
from ssmd.engine.checkpoint import CheckpointError, load_checkpoint, network_weights
from ssmd.engine.hooks import standard_hooks
from ssmd.engine.loader import PermutationSampler
from ssmd.engine.optim import build_optimizer, build_scheduler, seed_everything
from ssmd.engine.resume import resume_trainer
from ssmd.engine.trainer import Trainer
from ssmd.evaluation.classification import classification_metrics
from ssmd.methods.base import Method
from ssmd.methods.classification import ClassBatch, build_classification_method
from ssmd.methods.classification.base import CLASSIFICATION_METHODS
from ssmd.models.classifiers import Classifier, build_classifier
from ssmd.tasks.base import TASKS, Log, Task
from ssmd.utils.paths import prepare_output_dir
from ssmd.utils.registry import Registry

__all__ = [
    "ClassBatchStream",
    "ClassificationTask",
    "build_classification_data",
    "build_classification_model",
    "evaluate_classifier",
    "load_classifier",
    "predict_probabilities",
    "run_classification_training",
]


class Normalizer:
    """``(x - mean) / std`` per channel; ``mean``/``std`` of length 1 apply to every channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int) -> None:
        m, s = list(mean), list(std)
        if len(m) not in (1, channels) or len(s) not in (1, channels) or min(s) <= 0:
            raise ConfigError(
                f"data.mean = {m!r} / data.std = {s!r}: need 1 or {channels} values, std > 0"
            )
        self.mean = torch.tensor(m * (channels if len(m) == 1 else 1)).view(1, -1, 1, 1)
        self.std = torch.tensor(s * (channels if len(s) == 1 else 1)).view(1, -1, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class ClassBatchStream:
    """Endless shuffled batches of ``indices`` with two perturbed views per image.

    Each epoch is a fresh permutation (from the stream's own generator); the remainder that
    does not fill a batch is dropped, so a batch never holds an image twice. Resumable:
    :meth:`state_dict` carries the generator, the permutation and the position.

    Args:
        dataset: the images.
        indices: dataset positions this stream draws from.
        batch_size: images per batch (capped at ``len(indices)``).
        seed: generator seed.
        augment: the random perturbation applied independently to each view.
        normalize: intensity normalisation, applied before the augmentation (so its Gaussian
            noise is in normalised units).
        with_labels: attach labels (labeled streams).
    """

    def __init__(
        self,
        dataset: ClassificationDataset,
        indices: Sequence[int],
        batch_size: int,
        seed: int,
        augment: BatchAugment,
        normalize: Callable[[Tensor], Tensor],
        with_labels: bool,
    ) -> None:
        self.dataset = dataset
        self.sampler = PermutationSampler(indices, batch_size, seed)
        self.augment = augment
        self.normalize = normalize
        self.with_labels = with_labels

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    @property
    def generator(self) -> torch.Generator:
        return self.sampler.generator

    def __iter__(self) -> ClassBatchStream:
        return self

    def __next__(self) -> ClassBatch:
        idx = self.sampler.take()
        x, y = self.dataset.tensors(idx.numpy())
        x = self.normalize(x)  # (B, C, H, W)
        return ClassBatch(
            images=self.augment(x, self.generator),
            images_teacher=self.augment(x, self.generator),
            labels=y if self.with_labels else None,
            indices=idx,
        )

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


def build_classification_dataset_from_config(data_cfg: dict[str, Any]) -> ClassificationDataset:
    """The full dataset of the ``data`` section."""
    fmt = data_cfg["format"]
    size = data_cfg.get("image_size")
    if fmt == "synthetic_cls":
        syn = dict(data_cfg.get("synthetic") or {})
        return build_classification_dataset(fmt, None, image_size=int(size or 32), **syn)
    if fmt not in CLASSIFICATION_FORMATS:
        raise ConfigError(
            f"data.format = {fmt!r}: unknown classification format; known: "
            f"{', '.join(CLASSIFICATION_FORMATS)}"
        )
    kwargs: dict[str, Any] = {}
    if fmt == "isic2018" and data_cfg.get("cache_dir"):
        kwargs["cache_dir"] = data_cfg["cache_dir"]
    if data_cfg.get("root") in (None, ""):
        raise ConfigError(f"data.root is required for data.format = {fmt!r}")
    return build_classification_dataset(
        fmt, data_cfg["root"], image_size=int(size) if size else None, **kwargs
    )


def build_classification_data(config: dict[str, Any]) -> tuple[ClassificationDataset, Split]:
    """Dataset and split (drawn, or read from ``split.manifest``)."""
    dataset = build_classification_dataset_from_config(config["data"])
    sp = config["split"]
    if sp.get("manifest"):
        split = Split.from_json(sp["manifest"])
        for part in ("train", "val", "test"):
            for name in getattr(split, part):
                dataset.index_of(name)
    else:
        split = make_classification_split(
            dataset,
            seed=int(sp["seed"]),
            fractions=(float(sp["train"]), float(sp["val"]), float(sp["test"])),
            labeled_ratio=float(sp["labeled_ratio"]),
            use_predefined=bool(sp.get("use_predefined", True)),
        )
    return dataset, split


def build_classification_model(
    model_cfg: dict[str, Any], num_classes: int, in_channels: int
) -> Classifier:
    """The classifier of the ``model`` section (``model.pretrained_weights``: a backbone from
    ``ssmd pretrain`` for the trunk, see :func:`ssmd.models.classifiers.build_classifier`)."""
    return build_classifier(
        model_cfg["backbone"],
        num_classes=num_classes,
        in_channels=in_channels,
        width_multiplier=float(model_cfg["width_multiplier"]),
        small_input=bool(model_cfg["small_input"]),
        dropout=float(model_cfg["dropout"]),
        pretrained_weights=model_cfg.get("pretrained_weights"),
    )


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    dataset: ClassificationDataset,
    indices: Sequence[int],
    normalize: Callable[[Tensor], Tensor],
    multi_label: bool,
    batch_size: int = 256,
) -> np.ndarray:
    """Class probabilities ``(N, K)`` of ``dataset[indices]`` (model in eval mode)."""
    was_training = model.training
    model.eval()
    out = []
    idx = list(indices)
    for start in range(0, len(idx), batch_size):
        x, _ = dataset.tensors(idx[start : start + batch_size])
        logits, _ = model(normalize(x))
        out.append(torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1))
    model.train(was_training)
    if not out:
        return np.zeros((0, dataset.num_classes))
    return torch.cat(out).double().numpy()


def evaluate_classifier(
    model: nn.Module,
    dataset: ClassificationDataset,
    indices: Sequence[int],
    config: dict[str, Any],
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics (:func:`ssmd.evaluation.classification.classification_metrics`) and probabilities."""
    norm = Normalizer(config["data"]["mean"], config["data"]["std"], dataset.in_channels)
    probs = predict_probabilities(
        model, dataset, indices, norm, dataset.multi_label, int(config["eval"]["batch_size"])
    )
    metrics = classification_metrics(
        dataset.labels[list(indices)],
        probs,
        dataset.multi_label,
        dataset.class_names,
        threshold=float(config["eval"].get("threshold", 0.5)),
    )
    return metrics, probs


def _write_predictions(
    path: Path, dataset: ClassificationDataset, indices: Sequence[int], probs: np.ndarray
) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["image"]
            + [f"label_{c}" for c in dataset.class_names]
            + [f"prob_{c}" for c in dataset.class_names]
        )
        for i, row in zip(indices, probs, strict=True):
            w.writerow(
                [dataset.ids[i]]
                + [int(v) for v in dataset.labels[i]]
                + [f"{float(v):.6f}" for v in row]
            )


def run_classification_training(
    config: dict[str, Any], resume: bool | str | Path = False
) -> dict[str, Any]:
    """Train and test one classification run.

    Writes into ``config["output_dir"]``: ``config.yaml``, ``split.json``, ``metrics.jsonl``,
    ``last.pt`` (resumable), ``best.pt`` (best validation ``eval.select_metric``),
    ``test_metrics.json`` (flat dict of floats of ``best.pt`` on the test part),
    ``test_predictions.csv`` and ``summary.json`` (timing, sizes, best step).

    Args:
        config: a resolved config with ``task: classification``.
        resume: ``True`` to continue from ``output_dir/last.pt`` when it exists, or the path of
            a ``last.pt`` to continue from.

    Returns:
        ``{"output_dir": str, "test": metrics, ...}`` (the ``summary.json`` content).
    """
    if config.get("task") != "classification":
        raise ConfigError(f"task = {config.get('task')!r}: this job needs task: classification")
    out = prepare_output_dir(config["output_dir"])  # before the (slow) data loading
    tcfg = config["train"]
    if tcfg.get("threads"):
        torch.set_num_threads(int(tcfg["threads"]))
    seed = int(config["seed"])
    seed_everything(seed)
    dataset, split = build_classification_data(config)
    dump_config(config, out / "config.yaml")
    split.to_json(out / "split.json")
    model = build_classification_model(config["model"], dataset.num_classes, dataset.in_channels)
    method_cfg = dict(config["method"])
    method = build_classification_method(
        method_cfg.pop("name"),
        model,
        method_cfg,
        multi_label=dataset.multi_label,
        num_samples=len(dataset),
    )
    max_iters = int(tcfg["max_iters"])
    optimizer = build_optimizer(method.trainable_parameters(), tcfg)
    scheduler = build_scheduler(optimizer, tcfg)
    aug = config["augment"]
    augment = BatchAugment(
        hflip=float(aug["hflip"]),
        vflip=float(aug["vflip"]),
        rot90=bool(aug["rot90"]),
        translate=int(aug["translate"]),
        noise=float(aug["noise"]),
    )
    norm = Normalizer(config["data"]["mean"], config["data"]["std"], dataset.in_channels)
    ids = [dataset.index_of(n) for n in split.labeled]
    labeled = ClassBatchStream(
        dataset, ids, int(tcfg["batch_size"]), seed, augment, norm, with_labels=True
    )
    unlabeled = None
    if method.uses_unlabeled:
        if not split.unlabeled:
            raise ConfigError(
                f"method {config['method']['name']!r} needs unlabeled images: "
                f"split.labeled_ratio = {config['split']['labeled_ratio']} leaves none"
            )
        ub = int(tcfg["unlabeled_batch_size"] or tcfg["batch_size"])
        unlabeled = ClassBatchStream(
            dataset,
            [dataset.index_of(n) for n in split.unlabeled],
            ub,
            seed + 7919,
            augment,
            norm,
            with_labels=False,
        )
    val_idx = [dataset.index_of(n) for n in (split.val or split.test)]
    which = str(config["eval"].get("model", "student"))

    def evaluate(trainer: Trainer) -> dict[str, float]:
        net = trainer.method.inference_model(which)
        return evaluate_classifier(net, dataset, val_idx, config)[0]

    hooks, eval_hook = standard_hooks(out, tcfg, evaluate, config["eval"]["select_metric"])
    trainer = Trainer(
        method,
        optimizer,
        scheduler,
        cast(Any, labeled),
        cast(Any, unlabeled),
        max_iters,
        hooks,
        grad_clip=float(tcfg["grad_clip"]) if tcfg.get("grad_clip") else None,
        extra_state={
            "task": "classification",
            "config": config,
            "split": split.to_dict(),
            "num_classes": dataset.num_classes,
            "in_channels": dataset.in_channels,
            "class_names": list(dataset.class_names),
            "multi_label": dataset.multi_label,
        },
    )
    resume_path: Path | None = None
    if isinstance(resume, (str, Path)):
        resume_path = Path(resume)
    elif resume and (out / "last.pt").is_file():
        resume_path = out / "last.pt"
    if resume_path is not None:
        # the checkpoint's config must match (issue 24); a state that does not fit is named
        resume_trainer(trainer, resume_path, config, print)
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    best = load_checkpoint(out / "best.pt")
    method.model.load_state_dict(best["model"])
    teacher = getattr(method, "teacher", None)
    if "teacher" in best and isinstance(teacher, nn.Module):
        teacher.load_state_dict(best["teacher"])
    test_metrics: dict[str, float] = {}
    if split.test:
        test_idx = [dataset.index_of(n) for n in split.test]
        test_metrics, probs = evaluate_classifier(
            method.inference_model(which), dataset, test_idx, config
        )
        _write_predictions(out / "test_predictions.csv", dataset, test_idx, probs)
    (out / "test_metrics.json").write_text(json.dumps(test_metrics, indent=2))
    summary = {
        "output_dir": str(out),
        "test": test_metrics,
        "best_val": eval_hook.best,
        "best_step": eval_hook.best_step,
        "train_seconds": train_seconds,
        "max_iters": max_iters,
        "labeled_images": len(split.labeled),
        "unlabeled_images": len(split.unlabeled),
        "method": config["method"]["name"],
        "seed": seed,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_classifier(
    checkpoint: str | Path, which: str = "student"
) -> tuple[Classifier, dict[str, Any]]:
    """A classifier and its checkpoint state from ``best.pt`` / ``last.pt`` (weights_only).

    Raises:
        CheckpointError: not a classification checkpoint, or no ``which`` network in it.
    """
    state = load_checkpoint(checkpoint)
    if state.get("task") != "classification" or "config" not in state:
        raise CheckpointError(
            f"{checkpoint}: field 'task' = {state.get('task')!r}: not a classification checkpoint"
        )
    model = build_classification_model(  # the checkpoint's weights replace any initial ones
        {**state["config"]["model"], "pretrained_weights": None},
        int(state["num_classes"]),
        int(state["in_channels"]),
    )
    weights = network_weights(state, which, checkpoint)
    model.load_state_dict(weights)
    model.eval()
    return model, state


def is_classification_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint of a classification run."""
    return load_checkpoint(path).get("task") == "classification"


class ClassificationTask(Task):
    """Image classification (``task: classification``): MedMNIST, ISIC 2018, ChestX-ray14."""

    name = "classification"

    @property
    def defaults(self) -> dict[str, Any]:
        return TASK_DEFAULTS[self.name]

    @property
    def methods(self) -> Registry[Any]:
        return CLASSIFICATION_METHODS

    def build_data(self, config: dict[str, Any]) -> tuple[ClassificationDataset, Split]:
        return build_classification_data(config)

    def build_model(self, config: dict[str, Any], data: Any) -> nn.Module:
        dataset = data[0]
        return build_classification_model(config["model"], dataset.num_classes, dataset.in_channels)

    def build_method(self, config: dict[str, Any], model: nn.Module, data: Any) -> Method:
        method_cfg = dict(config["method"])
        return build_classification_method(
            method_cfg.pop("name"),
            model,
            method_cfg,
            multi_label=data[0].multi_label,
            num_samples=len(data[0]),
        )

    def train(
        self, config: dict[str, Any], resume: str | Path | None = None, log: Log = print
    ) -> dict[str, Any]:
        return dict(run_classification_training(config, resume=resume if resume else False))

    def evaluate_checkpoint(
        self, checkpoint: str | Path, part: str = "test", which: str = "student"
    ) -> dict[str, float]:
        model, state = load_classifier(checkpoint, which)
        config = state["config"]
        dataset, _ = build_classification_data(config)
        idx = [dataset.index_of(n) for n in state["split"][part]]
        return evaluate_classifier(model, dataset, idx, config)[0]

    def load_model(
        self, checkpoint: str | Path, which: str = "student"
    ) -> tuple[nn.Module, dict[str, Any]]:
        return load_classifier(checkpoint, which)

    def pretrain_images(
        self, config: dict[str, Any], part: str
    ) -> tuple[Callable[[int], Tensor], int, list[int], int]:
        """The dataset's images at ``data.image_size``."""
        cdata, csplit = build_classification_data(config)
        total = len(cdata)
        names = None if part == "all" else csplit.part(cast(Any, part))
        indices = list(range(total)) if names is None else [cdata.index_of(n) for n in names]

        def load(i: int) -> Tensor:
            return cdata.tensors([i])[0][0]  # (C, H, W)

        return load, total, indices, int(cdata.in_channels)

    def pretrain_trunk(
        self, config: dict[str, Any], in_channels: int
    ) -> tuple[nn.Module, list[int]]:
        """The classifier's trunk (a ResNet's ``body``, or the DenseNet trunk)."""
        classifier = build_classification_model(config["model"], 2, in_channels)
        trunk = classifier.trunk
        body = getattr(trunk, "body", trunk)
        return body, [int(cast(Any, trunk).out_channels)]

    def pretrain_view_size(self, config: dict[str, Any]) -> int:
        return int(config["data"].get("image_size") or 32)

    def predict(self, checkpoint: str | Path, source: Any, **kwargs: Any) -> Any:
        """Class probabilities ``(N, K)`` of ``checkpoint`` on a :class:`ClassificationDataset`."""
        model, state = load_classifier(checkpoint, kwargs.pop("which", "student"))
        config = state["config"]
        norm = Normalizer(config["data"]["mean"], config["data"]["std"], source.in_channels)
        return predict_probabilities(
            model, source, range(len(source)), norm, source.multi_label, **kwargs
        )


TASKS.register("classification")(ClassificationTask())
