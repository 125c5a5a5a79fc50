"""RetinaNet: dense shapes, flat order, targets, loss, post-processing, flips, factory."""

from __future__ import annotations

import pytest
import torch

from ssmd.models import (
    MODELS,
    DenseOutputs,
    RetinaNet,
    build_retinanet,
    create_model,
    flatten_levels,
)


def _tiny(**kw: object) -> RetinaNet:
    config: dict[str, object] = {
        "backbone": "resnet18",
        "width_multiplier": 0.25,
        "fpn_channels": 32,
        "head_convs": 2,
        "anchor_sizes": (8, 16, 32, 64, 128),
    }
    config.update(kw)
    return build_retinanet(**config)  # type: ignore[arg-type]


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {
            "boxes": torch.tensor([[10.0, 12.0, 30.0, 40.0], [60.0, 64.0, 100.0, 90.0]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]


@pytest.mark.parametrize(("activation", "logits"), [("softmax", 3), ("sigmoid", 2)])
def test_dense_shapes_per_level(activation: str, logits: int) -> None:
    model = _tiny(num_classes=2, activation=activation)
    for mode in (model.train, model.eval):
        mode()
        out = model(torch.randn(2, 3, 128, 128))
        assert isinstance(out, DenseOutputs)
        sizes = [16, 8, 4, 2, 1]
        assert [tuple(t.shape) for t in out.cls_logits] == [(2, 9, logits, s, s) for s in sizes]
        assert [tuple(t.shape) for t in out.box_deltas] == [(2, 9, 4, s, s) for s in sizes]
        assert out.image_size == (128, 128)
        n = 9 * sum(s * s for s in sizes)
        assert out.flat_cls_logits().shape == (2, n, logits)
        assert out.flat_box_deltas().shape == (2, n, 4)
        assert model.anchors(out).shape == (n, 4)


def test_flat_rows_match_dense_positions_and_anchors() -> None:
    model = _tiny()
    out = model(torch.randn(2, 3, 128, 256))
    flat = out.flat_box_deltas()
    anchors = model.anchors(out)
    level, b, a, y, x = 1, 1, 5, 3, 11  # P4: 8 x 16 cells
    offset = 16 * 32 * 9
    row = offset + (y * 16 + x) * 9 + a
    torch.testing.assert_close(flat[b, row], out.box_deltas[level][b, a, :, y, x])
    torch.testing.assert_close(out.flat_cls_logits()[b, row], out.cls_logits[level][b, a, :, y, x])
    centre = (anchors[row, :2] + anchors[row, 2:]) / 2
    torch.testing.assert_close(centre, torch.tensor([(x + 0.5) * 16, (y + 0.5) * 16]))


def test_class_probs() -> None:
    model = _tiny(num_classes=2)
    out = model(torch.randn(1, 3, 64, 64))
    probs = model.class_probs(out)
    assert [p.shape for p in probs] == [t.shape for t in out.cls_logits]
    torch.testing.assert_close(probs[0].sum(dim=2), torch.ones_like(probs[0][:, :, 0]))
    sig = _tiny(num_classes=2, activation="sigmoid")
    torch.testing.assert_close(sig.class_probs(out)[0], out.cls_logits[0].sigmoid())


def test_assign_targets_marks_anchor_equal_to_gt() -> None:
    model = _tiny(num_classes=2)
    out = model(torch.randn(1, 3, 128, 128))
    anchors = model.anchors(out)
    gt = anchors[700:701].clone()  # a P3 anchor, fully inside the image
    labels, box_targets = model.assign_targets(out, [{"boxes": gt, "labels": torch.tensor([2])}])
    assert labels[0, 700] == 2
    torch.testing.assert_close(box_targets[0, 700], torch.zeros(4), atol=1e-6, rtol=0)
    assert set(labels.unique().tolist()) <= {-2, 0, 2}
    assert (labels[0] == 0).sum() > 0.9 * labels.shape[1]


def test_loss_keys_and_empty_images() -> None:
    model = _tiny(num_classes=2)
    out = model(torch.randn(2, 3, 128, 128))
    losses = model.loss(out, _targets())
    assert set(losses) == {"loss_cls", "loss_box"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    empty = [_targets()[1], _targets()[1]]
    none = model.loss(out, empty)
    assert none["loss_box"].item() == 0.0
    assert torch.isfinite(none["loss_cls"]) and none["loss_cls"].item() > 0


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_gradient_reaches_every_head_parameter(activation: str) -> None:
    model = _tiny(num_classes=2, activation=activation)
    losses = model.loss(model(torch.randn(2, 3, 128, 128)), _targets())
    (losses["loss_cls"] + losses["loss_box"]).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        if name.startswith("head."):
            assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


def test_loss_rejects_bad_targets() -> None:
    model = _tiny(num_classes=2)
    out = model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"labels'\] must be in 1\.\.2, got \[0\]"):
        model.loss(
            out, [{"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([0])}]
        )
    with pytest.raises(ValueError, match="positive size"):
        model.loss(
            out, [{"boxes": torch.tensor([[5.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([1])}]
        )
    with pytest.raises(ValueError, match=r"must be \(N, 4\)"):
        model.loss(out, [{"boxes": torch.zeros(2, 5), "labels": torch.ones(2, dtype=torch.int64)}])
    with pytest.raises(ValueError, match="1 images"):
        model.loss(out, _targets())


def _confident(model: RetinaNet, std: float = 1.0) -> RetinaNet:
    """Random head outputs with many scores above threshold."""
    with torch.no_grad():
        model.head.cls_logits.weight.normal_(std=std)
        model.head.box_deltas.weight.normal_(std=0.5)
    return model.eval()


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_postprocess_limits_and_clips(activation: str) -> None:
    model = _confident(
        _tiny(num_classes=3, activation=activation, detections_per_img=40, score_thresh=0.0)
    )
    out = model(torch.randn(2, 3, 128, 128))
    sizes = [(128, 128), (100, 90)]
    dets = model.postprocess(out, image_sizes=sizes)
    assert len(dets) == 2
    for det, (h, w) in zip(dets, sizes, strict=True):
        boxes = det["boxes"]
        assert 0 < boxes.shape[0] <= 40
        assert det["scores"].shape == det["labels"].shape == boxes.shape[:1]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert set(det["labels"].tolist()) <= {1, 2, 3}
        assert (det["scores"][:-1] >= det["scores"][1:]).all()


def test_postprocess_default_keeps_300_and_thresholds() -> None:
    model = _confident(_tiny(num_classes=1), std=0.1)
    assert model.detections_per_img == 300
    out = model(torch.randn(1, 3, 256, 256))
    det = model.postprocess(out)[0]
    assert det["boxes"].shape[0] == 300  # more than 300 candidates survive NMS, 300 are kept
    assert (det["scores"] > 0.05).all()
    thresh = float(det["scores"].median())
    high = RetinaNet(
        model.backbone, model.fpn, model.head, model.anchor_generator, score_thresh=thresh
    ).eval()
    kept = high.postprocess(out)[0]
    assert 0 < kept["boxes"].shape[0] < 300 and (kept["scores"] > thresh).all()


@pytest.mark.parametrize("padded", [False, True])
def test_odd_sized_image(padded: bool) -> None:
    model = _tiny(num_classes=1)
    image = torch.randn(1, 3, 200, 333)
    if padded:  # to the next multiple of 128, as a flip-consistency pipeline would
        image = torch.nn.functional.pad(image, (0, 384 - 333, 0, 256 - 200))
    out = model(image)
    target = [{"boxes": torch.tensor([[300.0, 150.0, 333.0, 200.0]]), "labels": torch.tensor([1])}]
    losses = model.loss(out, target)
    assert all(torch.isfinite(v) for v in losses.values())
    _confident(model)
    det = model.postprocess(model(image), image_sizes=[(200, 333)])[0]
    assert det["boxes"].shape[0] > 0
    assert (det["boxes"][:, 2] <= 333).all() and (det["boxes"][:, 3] <= 200).all()


def test_hflip_of_outputs_mirrors_decoded_boxes() -> None:
    model = _tiny()
    h, w = 128, 256
    out = model(torch.randn(1, 3, h, w))
    with torch.no_grad():
        out = DenseOutputs(
            out.cls_logits, [torch.randn_like(t) * 0.3 for t in out.box_deltas], out.image_size
        )
    flipped = out.hflip()
    for level, anchors in enumerate(model.anchors_per_level(out)):
        hl, wl = out.feature_sizes[level]
        rows = flatten_levels([out.box_deltas[level]])[0]  # (HWA, 4)
        rows_f = flatten_levels([flipped.box_deltas[level]])[0]  # (HWA, 4)
        boxes = model.box_coder.decode(rows, anchors).view(hl, wl, 9, 4)  # (H, W, A, 4)
        boxes_f = model.box_coder.decode(rows_f, anchors).view(hl, wl, 9, 4)  # (H, W, A, 4)
        mirrored = torch.stack(
            [w - boxes[..., 2], boxes[..., 1], w - boxes[..., 0], boxes[..., 3]], -1
        )
        torch.testing.assert_close(boxes_f, mirrored.flip(1), atol=1e-3, rtol=1e-5)
        torch.testing.assert_close(flipped.cls_logits[level], out.cls_logits[level].flip(-1))
    assert torch.equal(flipped.hflip().box_deltas[0], out.box_deltas[0])


def test_detach_and_registry() -> None:
    model = create_model("retinanet_resnet18_cpu", num_classes=2)
    assert isinstance(model, RetinaNet) and model.num_classes == 2
    out = model(torch.randn(1, 3, 64, 64))
    assert not out.detach().cls_logits[0].requires_grad and out.cls_logits[0].requires_grad
    assert {"retinanet", "retinanet_resnet18_cpu"} <= set(MODELS.names())
    with pytest.raises(KeyError, match="retinanet"):
        create_model("yolo")
    big = create_model("retinanet", backbone="resnet50", width_multiplier=0.125, fpn_channels=16)
    assert isinstance(big, RetinaNet) and big.fpn.out_channels == 16


def test_parts_must_agree() -> None:
    model = _tiny(num_classes=2)
    with pytest.raises(ValueError, match="num_classes"):
        RetinaNet(model.backbone, model.fpn, model.head, model.anchor_generator, num_classes=3)
    with pytest.raises(ValueError, match="cls_loss"):
        RetinaNet(
            model.backbone,
            model.fpn,
            model.head,
            model.anchor_generator,
            num_classes=2,
            cls_loss="l2",  # type: ignore[arg-type]
        )
