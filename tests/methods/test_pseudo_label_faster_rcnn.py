"""Pseudo-labeling on Faster R-CNN: the pseudo loss reaches the network; both stages run."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ssmd.config import load_config
from ssmd.engine.checkpoint import load_checkpoint
from ssmd.methods import build_method
from ssmd.models.detectors.faster_rcnn import build_faster_rcnn
from ssmd.structures.sample import Batch, Sample, collate
from ssmd.tasks.detection import run_training


def _batch(n_boxes: list[int], size: int = 128) -> Batch:
    g = torch.Generator().manual_seed(0)
    samples = [
        Sample(
            torch.randn(3, size, size, generator=g),
            torch.tensor([[20.0, 24.0, 52.0, 60.0]] * n).view(n, 4),
            torch.ones(n, dtype=torch.int64),
            image_id=i,
        )
        for i, n in enumerate(n_boxes)
    ]
    return collate(samples)


def test_pseudo_loss_of_faster_rcnn_is_nonzero_and_reaches_the_network() -> None:
    torch.manual_seed(0)
    model = build_faster_rcnn(
        "resnet18",
        width_multiplier=0.25,
        fpn_channels=16,
        anchor_sizes=(8, 16, 32, 64, 128),
        representation_size=32,
        box_batch_size_per_image=32,
    )
    method = build_method("pseudo_label", model, {"cutout_size": 20, "cutout_reference": 128})
    method.train()
    losses = method.training_step(_batch([1, 1]), _batch([2, 0]), step=0, max_iters=10)
    assert {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"} <= set(losses)
    assert losses["pseudo_images"].item() == 1.0  # the image without pseudo boxes is dropped
    assert losses["loss_pseudo"].item() > 0
    grads = torch.autograd.grad(
        losses["loss_pseudo"], [model.backbone.conv1.weight, model.rpn.head.cls_logits.weight]
    )
    assert all(float(g.abs().sum()) > 0 for g in grads)


def test_two_stages_of_pseudo_labeling_on_faster_rcnn(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'pl'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "model.name=faster_rcnn",
            "model.fpn_channels=16",
            "model.representation_size=32",
            "model.box_batch_size_per_image=32",
            "model.rpn_post_nms_top_n_test=100",
            "model.score_thresh=0.0",
            "model.detections_per_img=20",
            "data.synthetic.n_images=12",
            "data.synthetic.image_size=128",
            "data.input_size=128",
            "split.labeled_ratio=0.5",
            "train.max_iters=2",
            "train.batch_size=2",
            "train.warmup_iters=0",
            "train.eval_every=2",
            "train.checkpoint_every=2",
            "train.progress=false",
            "method.name=pseudo_label",
            "method.threshold=0.0",  # an untrained detector: keep everything it predicts
            "method.cutout_size=20",
            "method.cutout_reference=128",
        ],
    )
    summary = run_training(config, log=lambda _: None)
    out = tmp_path / "pl"
    for run in (out / "stage1", out):
        state = load_checkpoint(run / "best.pt")
        assert state["config"]["model"]["name"] == "faster_rcnn"
    saved = json.loads((out / "test_metrics.json").read_text())
    assert saved["method"] == "pseudo_label" and "AP" in saved["test"]
    assert saved["pseudo_labels"]["boxes"] > 0
    assert summary["stage1"]["output_dir"] == str(out / "stage1")
    stage1 = json.loads((out / "stage1" / "test_metrics.json").read_text())
    assert stage1["method"] == "supervised"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("train/loss_pseudo", 0) > 0 for r in rows)
