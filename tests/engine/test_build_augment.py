"""run_training builds the data augmentation with the method's overrides (SSMD's rotation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ssmd.config import load_config
from ssmd.tasks import detection as build


@pytest.mark.parametrize(("method", "want_rotate"), [("supervised", 10.0), ("ssmd", 0.0)])
def test_ssmd_turns_the_pipeline_rotation_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, want_rotate: float
) -> None:
    seen: list[dict[str, Any]] = []
    real = build.augment_transform

    def spy(config: dict[str, Any]) -> Any:
        seen.append(dict(config["augment"]))
        return real(config)

    monkeypatch.setattr(build, "augment_transform", spy)
    config = load_config(
        None,
        [
            f"output_dir={tmp_path / method}",
            "data.synthetic.n_images=12",
            "data.synthetic.image_size=128",
            "data.input_size=128",
            "split.labeled_ratio=0.5",
            "model.fpn_channels=16",
            "model.head_convs=1",
            "model.head_norm=null",
            f"data.cache_dir={tmp_path / 'cache'}",
            "train.max_iters=1",
            "train.batch_size=2",
            "train.warmup_iters=0",
            "train.eval_every=1",
            "train.checkpoint_every=1",
            "train.progress=false",
            "augment.rotate=10.0",
            f"method.name={method}",
        ],
    )
    build.run_training(config, log=lambda s: None)
    assert seen and seen[0]["rotate"] == want_rotate
    assert seen[0]["hflip"] == config["augment"]["hflip"]
