from __future__ import annotations

import re
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


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lr=abc", "expected a finite number"),
        ("train.eval_every=abc", "expected an integer"),
        ("train.batch_size=2.5", "expected an integer"),
        ("train.progress=3", "expected true or false"),
        ("data.mean=[0.5,abc,0.5]", "expected a number"),
    ],
)
def test_a_value_of_the_wrong_type_names_key_value_and_type(override: str, expected: str) -> None:
    """Issue 24: 'could not convert string to float' named neither the key nor the value."""
    key, value = override.split("=")
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    text = str(err.value)
    assert key in text and expected in text and override in text
    assert ("'abc'" in text) or (value in text)


@pytest.mark.parametrize(
    ("override", "bound"),
    [
        ("train.max_iters=0", ">= 1"),
        ("train.max_iters=-5", ">= 1"),
        ("train.batch_size=0", ">= 1"),
        ("train.eval_every=-1", ">= 0"),
        ("train.lr=0", "> 0"),
        ("split.labeled_ratio=1.5", "in [0, 1]"),
        ("model.score_thresh=-0.1", "in [0, 1]"),
    ],
)
def test_counts_and_fractions_out_of_range_are_refused(override: str, bound: str) -> None:
    key, value = override.split("=")
    with pytest.raises(
        ConfigError, match=re.escape(f"config key {key} = {value}: must be {bound}")
    ):
        load_config(None, [override])


def test_numeric_strings_are_read_as_numbers_and_zero_periods_allowed(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.lr=1e-4", "train.max_iters=1e3", "train.eval_every=0"])
    assert cfg["train"]["lr"] == 1e-4 and isinstance(cfg["train"]["lr"], float)  # YAML: a str
    assert cfg["train"]["max_iters"] == 1000 and isinstance(cfg["train"]["max_iters"], int)
    assert cfg["train"]["eval_every"] == 0
    assert load_config(None, ["train.grad_clip=null"])["train"]["grad_clip"] is None
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  max_iters: -5\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: config key train\.max_iters = -5"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"train\.threads = 'two': expected an integer or null"):
        load_config(None, ["task=classification", "train.threads=two"])


def test_every_shipped_config_validates() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.yaml")) + sorted((root / "classification").glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        load_config(path)
