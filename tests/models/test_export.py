"""ONNX export (ssmd.models.export): onnxruntime matches PyTorch, NMS post-step matches postprocess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ssmd.data.datasets.synthetic import SyntheticConfig, generate_image
from ssmd.models.classifiers import build_classifier
from ssmd.models.detectors.retinanet import build_retinanet
from ssmd.models.export import (
    OnnxClassifier,
    OnnxDetector,
    RetinaNetExport,
    export_classifier,
    export_detector,
    require,
    select_detections,
)

pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'ssmd[onnx]')")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def _detector(activation: str = "softmax") -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_retinanet(
        width_multiplier=0.25,
        fpn_channels=16,
        head_convs=1,
        anchor_sizes=(8, 16, 32, 64, 128),
        activation=activation,  # type: ignore[arg-type]
        head_norm="gn",
        backbone_norm="gn",
        prior_prob=0.2,  # untrained: enough candidates above score_thresh for NMS to matter
        score_thresh=0.05,
        detections_per_img=100,
    )
    return model.eval()


def _synthetic(n: int, size: int = 128) -> torch.Tensor:
    cfg = SyntheticConfig(image_size=(size, size))
    imgs = [torch.as_tensor(generate_image(i, 0, cfg).image).float() for i in range(n)]
    x = torch.stack([im.permute(2, 0, 1) if im.shape[-1] == 3 else im for im in imgs])
    x = x / 255.0 if x.max() > 1 else x
    return (x - 0.5) / 0.25  # (N, 3, H, W), normalised as the default config


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.nn.Module, Path]]:
    """One export per activation, shared by the tests of this module (exporting is the slow part)."""
    out = {}
    for activation in ("softmax", "sigmoid"):
        model = _detector(activation)
        folder = tmp_path_factory.mktemp(activation)
        out[activation] = (
            model,
            export_detector(model, folder / "m.onnx", {"model": {}}, (128, 128)),
        )
    return out


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_onnxruntime_matches_pytorch_and_gives_the_same_detections(
    exported: dict[str, tuple[torch.nn.Module, Path]], activation: str
) -> None:
    model, path = exported[activation]
    onnx_model = OnnxDetector(path, threads=1)
    x = _synthetic(3)  # (3, 3, 128, 128)
    with torch.no_grad():
        ref = RetinaNetExport(model)(x)
    got = onnx_model(x)
    assert len(got) == 5
    for k, (scores, boxes) in enumerate(got):
        assert scores.shape == ref[2 * k].shape and boxes.shape == ref[2 * k + 1].shape
        torch.testing.assert_close(scores, ref[2 * k], atol=1e-4, rtol=0)
        torch.testing.assert_close(boxes, ref[2 * k + 1], atol=1e-4, rtol=0)
    sizes = [(128, 128), (100, 120), (128, 90)]  # unpadded sizes: clipping happens before NMS
    with torch.no_grad():
        want = model.postprocess(model(x), sizes)
    have = onnx_model.postprocess(got, sizes)
    assert sum(len(d["boxes"]) for d in want) > 10  # the test really exercises NMS
    for w, h in zip(want, have, strict=True):
        assert torch.equal(w["labels"], h["labels"])
        torch.testing.assert_close(h["boxes"], w["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(h["scores"], w["scores"], atol=1e-4, rtol=0)


def test_the_graph_takes_other_input_sizes(
    exported: dict[str, tuple[torch.nn.Module, Path]],
) -> None:
    model, path = exported["softmax"]
    x = _synthetic(1, 256)[:, :, :, :128]  # (1, 3, 256, 128): another size than exported
    with torch.no_grad():
        want = model.postprocess(model(x))
    have = OnnxDetector(path, threads=1).predict(x)
    assert len(want[0]["boxes"]) > 0
    torch.testing.assert_close(have[0]["boxes"], want[0]["boxes"], atol=1e-3, rtol=0)


def test_post_step_equals_postprocess_on_pytorch_outputs() -> None:
    model = _detector()
    x = _synthetic(2)
    with torch.no_grad():
        dense = RetinaNetExport(model)(x)
        want = model.postprocess(model(x))
    levels = [(dense[2 * k], dense[2 * k + 1]) for k in range(5)]
    have = select_detections(levels, [(128, 128)] * 2, 0.05, 1000, 0.5, 100)
    for w, h in zip(want, have, strict=True):
        assert torch.equal(w["boxes"], h["boxes"]) and torch.equal(w["scores"], h["scores"])


def test_faster_rcnn_is_refused_saying_why(tmp_path: Path) -> None:
    from ssmd.models.detectors.faster_rcnn import build_faster_rcnn

    model = build_faster_rcnn(width_multiplier=0.25, fpn_channels=16)
    with pytest.raises(ValueError, match="Faster R-CNN's second stage runs on the proposals"):
        export_detector(model, tmp_path / "f.onnx", {})
    assert not (tmp_path / "f.onnx").exists()


@pytest.mark.parametrize("multi_label", [False, True])
def test_classifier_export_matches(tmp_path: Path, multi_label: bool) -> None:
    torch.manual_seed(0)
    model = build_classifier("resnet18", num_classes=3, width_multiplier=0.25, small_input=True)
    model.eval()
    path = export_classifier(model, tmp_path / "c.onnx", {}, 3, 32, multi_label, ["a", "b", "c"])
    onnx_model = OnnxClassifier(path, threads=1)
    assert onnx_model.class_names == ["a", "b", "c"] and onnx_model.multi_label is multi_label
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits, _ = model(x)
    got_logits, got_probs = onnx_model(x)
    torch.testing.assert_close(got_logits, logits, atol=1e-4, rtol=0)
    want = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)
    torch.testing.assert_close(got_probs, want, atol=1e-4, rtol=0)
    assert np.allclose(got_probs.sum(1).numpy(), 1.0, atol=1e-5) is (not multi_label)


def test_a_missing_package_names_the_extra() -> None:
    with pytest.raises(ImportError, match=r"ssmd\[onnx\]"):
        require("onnx_package_that_does_not_exist")


def test_a_foreign_onnx_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match=r"x\.onnx"):
        OnnxDetector(bad)


def test_nms_in_the_graph_gives_the_same_detections(tmp_path: Path) -> None:
    import onnx

    model = _detector()
    path = export_detector(
        model, tmp_path / "nms.onnx", {"model": {}}, (128, 128), nms_in_graph=True
    )
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "NonMaxSuppression" in ops
    x = _synthetic(3)
    with torch.no_grad():
        want = model.postprocess(model(x))
    have = OnnxDetector(path, threads=1).predict(x)
    assert sum(len(d["boxes"]) for d in want) > 10
    for w, h in zip(want, have, strict=True):
        assert torch.equal(w["labels"], h["labels"])
        torch.testing.assert_close(h["boxes"], w["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(h["scores"], w["scores"], atol=1e-4, rtol=0)
