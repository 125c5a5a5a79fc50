"""Experiment files: validation errors that name the field, the grid, each cell's config,
and --rows/--seeds/--ratios restrictions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ssmd import experiments as ex
from ssmd.config import ConfigError

BASE = Path(__file__).resolve().parents[2] / "configs" / "synthetic_cpu.yaml"


def test_grid_and_cell_configs(tmp_path: Path, write_experiment: Callable[..., Path]) -> None:
    exp = ex.load_experiment(write_experiment(tmp_path))
    cells = exp.cells()
    assert len(cells) == 3 * (2 * 2 + 1)
    assert cells[0].id == "supervised__r0.1__s0" and cells[1].id == "ssmd-w-o-acc__r0.1__s0"
    assert {c.id for c in cells if c.method.reference} == {
        f"fully-supervised__r1__s{s}" for s in (0, 1, 2)
    }
    cfg = exp.cell_config(cells[1])
    assert cfg["method"] == {"name": "ssmd", "acc": False}
    assert cfg["split"]["labeled_ratio"] == 0.1 and cfg["seed"] == 0
    assert cfg["output_dir"] == str(tmp_path / "exp" / "runs" / "ssmd-w-o-acc__r0.1__s0")


def test_restrict_keeps_reference_rows_and_rejects_unknown_values(
    tmp_path: Path, write_experiment: Callable[..., Path]
) -> None:
    exp = ex.load_experiment(write_experiment(tmp_path))
    sub = exp.restrict(ratios=[0.2], seeds=[1, 2])
    ids = [c.id for c in sub.cells()]
    assert ids[0] == "supervised__r0.2__s1"
    assert len(ids) == 2 * (2 + 1)  # two rows at 20% + fully supervised, seeds 1 and 2
    assert "fully-supervised__r1__s1" in ids and not any("__s0" in i or "r0.1" in i for i in ids)
    assert exp.cells()[0].id == "supervised__r0.1__s0"  # the original is unchanged
    with pytest.raises(ConfigError, match=r"ratio 0\.3"):
        exp.restrict(ratios=[0.3])
    with pytest.raises(ConfigError, match="seed 7"):
        exp.restrict(seeds=[7])
    only = exp.restrict(rows=["ssmd-w-o-acc", "fully-SUPERVISED"], seeds=[0])
    assert [c.id for c in only.cells()] == [
        "ssmd-w-o-acc__r0.1__s0",
        "ssmd-w-o-acc__r0.2__s0",
        "fully-supervised__r1__s0",
    ]
    assert only.run_dir(only.cells()[0]) == exp.run_dir(exp.cells()[1])  # the grid's folder
    with pytest.raises(ConfigError, match="row 'CSD'"):
        exp.restrict(rows=["CSD"])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"ratio": [0.1]}, "unknown key"),
        ({"ratios": [0.0]}, r"ratios = 0\.0"),
        ({"seeds": [0, 0]}, "repeat"),
        ({"test": "t"}, "test = 't'"),
        ({"methods": [{"name": "mean_teacher"}]}, r"methods\[0\]\.name = 'mean_teacher'"),
        ({"methods": [{"name": "csd", "param": {}}]}, r"methods\[0\]\.param"),
        ({"overrides": ["train.max_iter=3"]}, "train.max_iter"),
        ({"base_config": "nowhere.yaml"}, "base_config"),
    ],
)
def test_bad_experiment_files_name_the_field(
    tmp_path: Path, change: dict[str, Any], match: str, write_experiment: Callable[..., Path]
) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        ex.load_experiment(write_experiment(tmp_path, **change))
    assert "exp.yaml" in str(info.value)


def test_baseline_must_be_a_ranked_row(
    tmp_path: Path, write_experiment: Callable[..., Path]
) -> None:
    with pytest.raises(ConfigError, match="baseline = 'Fully-supervised'"):
        ex.load_experiment(write_experiment(tmp_path, baseline="Fully-supervised"))
    with pytest.raises(ConfigError, match="baseline = 'Nope'"):
        ex.load_experiment(write_experiment(tmp_path, baseline="Nope"))


EXPERIMENTS = sorted((BASE.parent / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_shipped_experiment_files_load_and_name_real_parameters(path: Path) -> None:
    from ssmd.methods import METHODS

    exp = ex.load_experiment(path)
    assert exp.cells() and len(exp.seeds) >= 2
    for spec in exp.methods:
        if exp.task != "detection":  # classification methods have their own registry
            continue
        unknown = set(spec.params) - set(METHODS.get(spec.name).defaults)
        assert not unknown, f"{path.name}: {spec.label}: {unknown}"
        exp.cell_config(ex.Cell(spec, (spec.ratios or exp.ratios)[0], exp.seeds[0]))


def test_table1_files_cover_every_baseline() -> None:
    for variant in ("cpu", "paper"):
        exp = ex.load_experiment(BASE.parent / "experiments" / f"table1_{variant}.yaml")
        # the paper's rows, in its order; extra rows are variants with their own params
        # (table1_cpu pins SSMD's background fill to the one its committed cells ran with)
        paper_rows = [m for m in exp.methods if set(m.params) <= {"fill"}]
        assert [m.name for m in paper_rows] == [
            "supervised",
            "pseudo_label",
            "csd",
            "focalmix",
            "ssmd",
            "supervised",
        ]
        assert exp.ratios == [0.1, 0.2, 0.3, 0.4, 0.5] and exp.methods[-1].reference
