"""The ct_slices recipe end to end on tiny synthetic stacks: stages, COCO output, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ssmd.config import ConfigError, load_config
from ssmd.tasks import ct_slices as ct
from ssmd.tasks.detection import run_training

TINY = [
    "method.name=label_propagation",
    "method.n_series=4",
    "method.num_neighbors=1",  # 3 channels: one group
    "method.mine=true",
    "method.tau=0.0",  # an untrained detector: any overlap propagates
    "method.alpha=0.0",
    "method.distill=true",
    "method.distill_threshold=0.0",
    "method.tta_scales=[1.0]",
    "method.tta_hflip=false",
    "data.format=synthetic_slices",
    "data.synthetic.image_size=64",
    "data.input_size=128",
    "model.name=faster_rcnn_3dce",
    "model.slice_groups=1",
    "model.fpn_channels=8",
    "model.representation_size=16",
    "model.score_thresh=0.0",
    "model.detections_per_img=10",
    "model.rpn_post_nms_top_n_test=50",
    "train.max_iters=1",
    "train.batch_size=2",
    "train.warmup_iters=0",
    "train.eval_every=1",
    "train.checkpoint_every=1",
    "train.progress=false",
    "eval.froc=false",
]


def test_recipe_runs_writes_coco_with_provenance_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(
        None, [f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'c'}", *TINY]
    )
    summary = run_training(config, log=lambda _: None)
    record = json.loads((tmp_path / "run" / "slice_labels.json").read_text())
    assert set(record) >= {"info", "images", "annotations", "categories", "stats"}
    algos = {a["provenance"]["algorithm"] for a in record["annotations"]}
    assert ct.LP in algos  # tau = 0: every overlapping prediction propagates
    assert ct.DD in algos  # threshold 0: every ensemble detection is kept
    for a in record["annotations"]:
        assert a["image_id"] in {im["id"] for im in record["images"]}
        assert len(a["bbox"]) == 4 and a["bbox"][2] > 0
        if a["provenance"]["algorithm"] != ct.DD:  # LP / MM boxes name their key slice
            assert "key_file_name" in a["provenance"]
    q = record["stats"]["propagation"]["quality_vs_hidden_truth"]
    assert q["boxes"] == sum(
        1 for a in record["annotations"] if a["provenance"]["algorithm"] == ct.LP
    )
    assert summary["slice_labels"] == record["stats"] and "stage1" in summary
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["labeled"]) > len(
        json.loads((tmp_path / "run" / "stage1" / "split.json").read_text())["labeled"]
    )
    # a finished stage 1 of other data is refused, naming its ct_data.json
    other = {**config, "method": {**config["method"], "n_series": 6}}
    with pytest.raises(ValueError, match=r"ct_data\.json.*other data"):
        ct.CTStage1().load(other, {}, lambda _: None)
    # a second run trains only the last stage
    assert ct.SliceLabelStage().done(config)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("predicted again")

    monkeypatch.setattr(ct, "predict_samples", fail)
    monkeypatch.setattr(ct, "ensemble_predict", fail)
    calls: list[str] = []
    real = ct.train_once

    def spy(cfg: dict[str, Any], **kw: Any) -> dict[str, Any]:
        calls.append(cfg["output_dir"])
        return real(cfg, **kw)

    monkeypatch.setattr(ct, "train_once", spy)
    run_training(config, log=lambda _: None)
    assert calls == [str(tmp_path / "run")]


def test_bad_recipe_settings_are_named(tmp_path: Path) -> None:
    base = [f"output_dir={tmp_path / 'r'}", *TINY]
    with pytest.raises(ConfigError, match=r"method\.propagate, method\.mine and method\.distill"):
        ct.ct_slices_stages(
            load_config(
                None, [*base, "method.propagate=false", "method.mine=false", "method.distill=false"]
            )
        )
    with pytest.raises(ConfigError, match=r"method\.tau"):
        ct.ct_slices_stages(load_config(None, [*base, "method.tau=2"]))
    cfg = load_config(None, [*base, "method.num_neighbors=4", f"data.root={tmp_path / 'c'}"])
    with pytest.raises(ConfigError, match=r"data.mean .* 9 channels"):
        ct.ct_data(cfg)


LUNG_PET = Path(__file__).resolve().parents[2].parent / "shared/data/lung_pet_ct_dx"


def test_ct_data_reads_the_deeplesion_layout_with_slice_neighbours(tmp_path: Path) -> None:
    root = LUNG_PET / "deeplesion_format"
    if not root.is_dir():
        pytest.skip(f"real data not found: {root}")
    cfg = load_config(
        None,
        [
            f"output_dir={tmp_path}",
            "method.name=label_propagation",
            "data.format=deeplesion",
            f"data.root={root}",
            "data.mean=[0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2]",
            "data.std=[0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1]",
        ],
    )
    data = ct.ct_data(cfg)
    ds = data.dataset
    assert len(ds) == 21 and len(data.split.labeled) == 11  # slices 8-28, 13-23 boxed
    key = ds.index_of("Images_png/900001_01_01/018.png")
    up = ct.neighbour_of(ds, key, 1)
    assert up is not None and ds.records[up].file_name.endswith("/019.png")
    assert ct.neighbour_of(ds, ds.index_of("Images_png/900001_01_01/028.png"), 1) is None
    assert data.samples[key].image.shape[0] == 9
