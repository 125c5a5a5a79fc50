"""Pseudo-labeling: the threshold filter, the pseudo-box injection (no ground truth of the
unlabeled part reaches stage 2), strong augmentation, the pseudo loss reaching the network,
and both stages from one ``run_training`` call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ssmd.config import load_config
from ssmd.methods.base import METHODS, build_method
from ssmd.methods.pseudo_label import PseudoLabel, strong_augment
from ssmd.models import build_retinanet
from ssmd.structures.sample import Batch, Sample, collate
from ssmd.tasks.detection import run_training
from ssmd.tasks.pseudo_label import PseudoLabeledSamples, filter_pseudo_labels


def test_threshold_filter_keeps_scores_at_or_above_the_threshold() -> None:
    preds = [
        {
            "image_id": 7,
            "boxes": torch.arange(16, dtype=torch.float32).view(4, 4),
            "scores": torch.tensor([0.95, 0.9, 0.89, 0.2]),
            "labels": torch.tensor([1, 2, 1, 1]),
        },
        {
            "image_id": 8,
            "boxes": torch.zeros(0, 4),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
        },
    ]
    kept = filter_pseudo_labels(preds, 0.9)
    assert kept[0]["image_id"] == 7
    assert kept[0]["scores"].tolist() == pytest.approx([0.95, 0.9])
    assert kept[0]["labels"].tolist() == [1, 2]  # one-hot: the detection's class
    assert torch.equal(kept[0]["boxes"], preds[0]["boxes"][:2])
    assert len(kept[1]["boxes"]) == 0
    assert len(filter_pseudo_labels(preds, 0.96)[0]["boxes"]) == 0
    with pytest.raises(ValueError):
        filter_pseudo_labels(preds, 1.5)


def test_injection_replaces_ground_truth_with_scaled_pseudo_boxes() -> None:
    gt = torch.tensor([[1.0, 1.0, 5.0, 5.0]])
    samples = [
        Sample(torch.zeros(3, 64, 64), gt, torch.tensor([1]), image_id=i, scale=2.0)
        for i in range(3)
    ]
    pseudo = {
        1: (torch.tensor([[10.0, 4.0, 20.0, 12.0]]), torch.tensor([1])),
        2: (torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)),
    }
    wrapped = PseudoLabeledSamples(samples, pseudo)
    assert len(wrapped) == 3
    assert torch.equal(wrapped[0].boxes, gt)  # labeled / val / test: unchanged
    assert wrapped[1].boxes.tolist() == [[20.0, 8.0, 40.0, 24.0]]  # original px * scale
    assert len(wrapped[2].boxes) == 0  # nothing confident: no box, never the ground truth


def _tiny() -> nn.Module:
    return build_retinanet(
        "resnet18",
        width_multiplier=0.25,
        fpn_channels=16,
        head_convs=1,
        anchor_sizes=(8, 16, 32, 64, 128),
    )


def _batch(n_boxes: list[int], size: int = 128) -> Batch:
    g = torch.Generator().manual_seed(0)
    samples = []
    for i, n in enumerate(n_boxes):
        boxes = torch.tensor([[20.0, 24.0, 52.0, 60.0]] * n).view(n, 4)
        samples.append(
            Sample(
                torch.randn(3, size, size, generator=g),
                boxes,
                torch.ones(n, dtype=torch.int64),
                image_id=i,
            )
        )
    return collate(samples)


def test_strong_augment_flips_boxes_with_the_image() -> None:
    torch.manual_seed(0)
    images = torch.zeros(1, 3, 32, 16)
    images[0, :, 2:6, 3:7] = 1.0
    boxes = [torch.tensor([[3.0, 2.0, 7.0, 6.0]])]
    out, new = strong_augment(images, boxes, vflip=1.0, brightness=0.0, contrast=0.0, cutout_n=0)
    assert new[0].tolist() == [[3.0, 26.0, 7.0, 30.0]]
    assert bool((out[0, :, 26:30, 3:7] == 1).all()) and float(out.sum()) == float(images.sum())
    jittered, _ = strong_augment(
        images,
        boxes,
        vflip=0.0,
        brightness=0.5,
        contrast=0.5,
        cutout_n=1,
        cutout_size=4,
        cutout_reference=16,
    )
    assert jittered.shape == images.shape and not torch.equal(jittered, images)
    assert torch.equal(images[0, :, 2:6, 3:7], torch.ones(3, 4, 4))  # input untouched


def test_pseudo_loss_is_nonzero_reaches_the_network_and_skips_empty_images() -> None:
    torch.manual_seed(0)
    method = build_method("pseudo_label", _tiny(), {"cutout_size": 20, "cutout_reference": 128})
    assert isinstance(method, PseudoLabel) and METHODS.get("pseudo_label") is PseudoLabel
    method.train()
    losses = method.training_step(_batch([1, 1]), _batch([2, 0]), step=0, max_iters=10)
    assert losses["pseudo_images"].item() == 1.0  # the image without pseudo boxes is dropped
    assert losses["loss_pseudo"].item() > 0
    grads = torch.autograd.grad(
        losses["loss_pseudo"], method.trainable_parameters(), allow_unused=True
    )
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    none = method.training_step(_batch([1]), _batch([0, 0]), step=0, max_iters=10)
    assert none["loss_pseudo"].item() == 0.0 and none["pseudo_images"].item() == 0.0
    with pytest.raises(ValueError, match="threshold"):
        PseudoLabel(_tiny(), threshold=2.0)


# a detector and data small enough for a 2-step run of both stages on a CPU
TINY = [
    "data.synthetic.n_images=12",
    "data.synthetic.image_size=128",
    "data.input_size=128",
    "split.labeled_ratio=0.5",
    "model.fpn_channels=16",
    "model.head_convs=1",
    "model.head_norm=null",
    "model.score_thresh=0.0",
    "model.detections_per_img=20",
    "train.max_iters=2",
    "train.batch_size=2",
    "train.warmup_iters=0",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.progress=false",
]


def test_two_stages_from_one_run(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'pl'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            *TINY,
            "method.name=pseudo_label",
            "method.threshold=0.0",  # an untrained detector: keep everything it predicts
            "method.cutout_size=20",
            "method.cutout_reference=128",
        ],
    )
    logs: list[str] = []
    summary = run_training(config, log=logs.append)
    out = tmp_path / "pl"
    assert not any("WARNING" in line for line in logs)  # dense pseudo labels: no warning
    assert (out / "stage1" / "best.pt").is_file() and (out / "best.pt").is_file()
    saved = json.loads((out / "test_metrics.json").read_text())
    assert saved["method"] == "pseudo_label" and "stage1" in saved and "AP" in saved["test"]
    assert saved["pseudo_labels"]["boxes"] > 0
    assert summary["pseudo_labels"] == saved["pseudo_labels"]
    pseudo = json.loads((out / "pseudo_labels.json").read_text())
    assert pseudo["threshold"] == 0.0 and len(pseudo["images"]) == saved["unlabeled_images"]
    assert json.loads((out / "stage1" / "test_metrics.json").read_text())["method"] == "supervised"
    # a second call reuses stage 1 (its metrics file is not rewritten)
    # (with a threshold no score reaches: the sparse-pseudo-label warning names the threshold)
    mtime = (out / "stage1" / "test_metrics.json").stat().st_mtime_ns
    config["method"]["threshold"] = 1.0
    logs.clear()
    again = run_training(config, log=logs.append)
    assert (out / "stage1" / "test_metrics.json").stat().st_mtime_ns == mtime
    assert again["pseudo_labels"]["boxes"] == 0
    assert again["pseudo_labels"]["boxes_per_labeled_image"] > 0
    assert any("WARNING" in line and "threshold 1.0" in line for line in logs)


def test_stage1_dir_reuses_a_finished_run_and_refuses_a_mismatching_one(tmp_path: Path) -> None:
    from ssmd.config import dump_config
    from ssmd.tasks.pseudo_label import stage1_config, stage1_mismatch

    config = load_config(None, [f"output_dir={tmp_path / 'pl'}", "method.name=pseudo_label"])
    run = tmp_path / "sup"
    assert "config.yaml does not exist (not a finished run)" in str(stage1_mismatch(config, run))
    run.mkdir()
    (run / "best.pt").write_bytes(b"")
    (run / "test_metrics.json").write_text("{}")
    mine = stage1_config(config)
    assert mine["method"] == {"name": "supervised"}
    assert mine["output_dir"] == str(tmp_path / "pl" / "stage1")
    # output_dir and logging keys may differ ...
    dump_config(
        {**mine, "output_dir": "elsewhere", "train": {**mine["train"], "progress": False}},
        run / "config.yaml",
    )
    assert stage1_mismatch(config, run) is None
    # ... a training field may not: the message names the field and both values
    changed = {**mine, "train": {**mine["train"], "lr": 0.5}}
    dump_config(changed, run / "config.yaml")
    why = stage1_mismatch(config, run)
    assert why is not None and "train.lr = 0.5" in why
    assert f"{mine['train']['lr']!r}" in why
    config["method"]["stage1_dir"] = str(run)
    with pytest.raises(ValueError, match=r"method.stage1_dir = .*train\.lr = 0\.5"):
        run_training(config, log=lambda _: None)
    assert not (tmp_path / "pl" / "stage1").exists()  # nothing trained


def test_stage1_dir_trains_only_stage2(tmp_path: Path) -> None:
    overrides = [
        f"data.cache_dir={tmp_path / 'cache'}",
        *TINY,
    ]
    sup = load_config(None, [*overrides, f"output_dir={tmp_path / 'sup'}"])
    run_training(sup, log=lambda _: None)
    config = load_config(
        None,
        [
            *overrides,
            f"output_dir={tmp_path / 'pl'}",
            "method.name=pseudo_label",
            "method.threshold=0.0",
            "method.cutout_size=20",
            "method.cutout_reference=128",
            f"method.stage1_dir={tmp_path / 'sup'}",
        ],
    )
    logs: list[str] = []
    summary = run_training(config, log=logs.append)
    assert not (tmp_path / "pl" / "stage1").exists()
    assert summary["stage1"]["output_dir"] == str(tmp_path / "sup")
    sup_test = json.loads((tmp_path / "sup" / "test_metrics.json").read_text())["test"]
    assert summary["stage1"]["test"] == sup_test
    assert summary["pseudo_labels"]["boxes"] > 0
    assert any("method.stage1_dir" in line for line in logs)
