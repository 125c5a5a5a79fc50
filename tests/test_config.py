from __future__ import annotations

from pathlib import Path

import pytest

from ssmd.config import DEFAULTS, ConfigError, apply_overrides, load_config


def test_overrides_are_typed_and_strict(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "train.max_iters=20",
            "split.labeled_ratio=0.1",
            "data.root=/x/y",
            "model.anchor_sizes=[4,8,16,32,64]",
        ],
    )
    assert cfg["train"]["max_iters"] == 20
    assert cfg["split"]["labeled_ratio"] == 0.1
    assert cfg["data"]["root"] == "/x/y"
    assert cfg["model"]["anchor_sizes"] == [4, 8, 16, 32, 64]
    assert DEFAULTS["train"]["max_iters"] != 20  # defaults untouched
    with pytest.raises(ConfigError, match=r"train\.max_iter"):
        apply_overrides(cfg, ["train.max_iter=3"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["train.max_iters"])
    # the method section is open: methods declare their own keys
    assert apply_overrides(cfg, ["method.alpha=0.9"])["method"]["alpha"] == 0.9


def test_yaml_file_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  max_iters: 5\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "c.yaml" in str(err.value) and "train.lrr" in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
