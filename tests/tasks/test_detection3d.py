"""task: detection3d end to end on tiny synthetic CT volumes: train, validate, test, files, reload."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssmd.config import ConfigError, load_config
from ssmd.evaluation.luna16 import read_submission
from ssmd.tasks import get_task

TINY = [
    "task=detection3d",
    "data.synthetic.n_volumes=6",
    "data.synthetic.fov_mm=48",
    "data.synthetic.max_nodules=2",
    "data.synthetic.diameter_mm=[3,12]",
    "data.synthetic.seed=3",  # every part of the split holds nodules
    "data.patch_size=[32,32,32]",
    "data.pos_fraction=1.0",
    "split.train=0.5",
    "split.val=0.17",
    "split.test=0.33",
    "model.widths=[4,8,8,8]",
    "model.fpn_channels=8",
    "model.score_thresh=0.0",
    "train.max_iters=4",
    "train.batch_size=1",
    "train.warmup_iters=0",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.log_every=2",
    "train.progress=false",
    "eval.patch_size=[32,32,32]",
    "eval.overlap=[8,8,8]",
    "eval.n_boot=20",
    "eval.detections=20",
]


def _config(tmp_path: Path, *extra: str) -> dict:
    return load_config(
        None,
        [*TINY, f"output_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}", *extra],
    )


def test_defaults_and_registration() -> None:
    task = get_task("detection3d")
    cfg = load_config(None, ["task=detection3d"])
    assert cfg["model"]["name"] == "retinanet3d" and cfg["eval"]["select_metric"] == "CPM"
    assert task.defaults is not None and "supervised" in task.methods


def test_train_evaluate_and_reload(tmp_path: Path) -> None:
    task = get_task("detection3d")
    summary = task.train(_config(tmp_path), log=lambda _: None)
    run = tmp_path / "run"
    for name in ("best.pt", "last.pt", "config.yaml", "split.json", "test_metrics.json"):
        assert (run / name).is_file(), name
    test = summary["test"]
    assert set(test) >= {"CPM", "sensitivity@0.125", "sensitivity@8", "CPM_lo", "CPM_hi"}
    assert 0.0 <= test["CPM_lo"] <= test["CPM_hi"] <= 1.0 and 0.0 <= test["CPM"] <= 1.0
    # the submission CSV: world candidates for every test scan with at least one detection
    cands = read_submission(run / "test_candidates.csv")
    assert cands and all(rows.shape[1] == 4 for rows in cands.values())
    assert (run / "test_annotations.csv").read_text().startswith("seriesuid,coordX")
    model, state = task.load_model(run / "best.pt")
    assert not model.training and state["config"]["task"] == "detection3d"
    again = task.evaluate_checkpoint(run / "best.pt", part="test")
    assert again["CPM"] == pytest.approx(test["CPM"])  # same weights, same volumes, same rule
    assert torch.isfinite(torch.tensor(list(again.values()))).all()


def test_bad_config_is_named(tmp_path: Path) -> None:
    task = get_task("detection3d")
    with pytest.raises(ConfigError, match=r"model.widht"):
        task.train(_config(tmp_path, "model.widht=[4,8]"), log=lambda _: None)
    with pytest.raises(ConfigError, match=r"data.format"):
        task.train(_config(tmp_path, "data.format=dsb2018"), log=lambda _: None)
    with pytest.raises(ConfigError, match=r"data.patch_size"):
        task.train(_config(tmp_path, "data.patch_size=[32,32]"), log=lambda _: None)
    with pytest.raises(ConfigError, match=r"'val'.*holds no nodule"):
        task.train(_config(tmp_path, "data.synthetic.seed=0"), log=lambda _: None)


def test_focalmix3d_trains_through_the_task(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        "method.name=focalmix",
        "method.num_augmentations=2",
        "model.activation=softmax",
        "split.labeled_ratio=0.34",
        "train.max_iters=2",
        "eval.n_boot=0",
    )
    summary = get_task("detection3d").train(cfg, log=lambda _: None)
    assert summary["method"] == "focalmix" and summary["unlabeled_images"] >= 1
    assert "CPM" in summary["test"]


def test_shipped_3d_configs_load_and_build() -> None:
    root = Path(__file__).resolve().parents[2] / "configs"
    for name in (
        "synthetic_ct_3d_cpu.yaml",
        "synthetic_ct_3d_focalmix_cpu.yaml",
        "luna16_3d_gpu.yaml",
    ):
        cfg = load_config(root / name)
        model = get_task("detection3d").build_model(cfg, type("D", (), {"dataset": _OneClass()})())
        assert model.spatial_dims == 3, name


class _OneClass:
    num_classes = 1


def test_unlabeled_patches_never_see_the_boxes() -> None:
    from ssmd.structures.sample import Sample
    from ssmd.tasks.detection3d import augment_transform

    cfg = load_config(None, [*TINY, "data.pos_fraction=1.0"])
    sample = Sample(
        torch.zeros(1, 64, 64, 64),
        torch.tensor([[50.0, 50, 50, 60, 60, 60]]),
        torch.tensor([1]),
        image_id=1,
        spatial_dims=3,
    )
    torch.manual_seed(0)
    labeled = [augment_transform(cfg)(sample) for _ in range(8)]
    assert all(len(s.boxes) == 1 for s in labeled)  # positive patches always hold the nodule
    unlabeled = [augment_transform(cfg, labeled=False)(sample) for _ in range(8)]
    assert all(len(s.boxes) == 0 and len(s.labels) == 0 for s in unlabeled)
