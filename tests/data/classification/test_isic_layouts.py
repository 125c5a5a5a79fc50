"""The three official ISIC 2018 Task 3 layouts (Training, Validation, Test) load (issue 24)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssmd.data.classification import build_classification_dataset
from ssmd.data.classification.isic import ISIC_CLASSES, find_isic_layout, load_isic2018
from ssmd.utils.errors import DataError

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def write_part(
    root: Path, part: str, rows: list[tuple[str, int]], nested_csv: bool = False
) -> Path:
    """One part in the official layout; ``nested_csv``: the CSV inside its unzipped folder."""
    images = root / f"ISIC2018_Task3_{part}_Input"
    images.mkdir(parents=True)
    name = f"ISIC2018_Task3_{part}_GroundTruth.csv"
    csv_path = root / Path(name).stem / name if nested_csv else root / name
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", *ISIC_CLASSES])
        for image, cls in rows:
            w.writerow([image, *[f"{float(c == cls):.1f}" for c in range(7)]])
            Image.fromarray(np.full((12, 12, 3), 30 * cls, np.uint8)).save(images / f"{image}.jpg")
    (images / "LICENSE.txt").write_text("CC-BY-NC")  # the official folders carry these
    return csv_path


TEST_ROWS = [("ISIC_0034524", 1), ("ISIC_0034525", 4), ("ISIC_0034526", 0)]


@pytest.mark.parametrize("part", ["Training", "Validation", "Test"])
def test_each_official_part_loads_and_is_named(tmp_path: Path, part: str) -> None:
    csv_path = write_part(tmp_path, part, TEST_ROWS)
    ds = load_isic2018(tmp_path, image_size=8)
    assert len(ds) == 3 and ds.ids == [r[0] for r in TEST_ROWS]
    assert ds.class_indices().tolist() == [1, 4, 0]
    assert ds.source == str(csv_path) and f"_{part}_" in ds.source  # says which part was read
    assert ds.groups == ds.ids  # no lesion_ids.csv: each image its own group


def test_official_test_part_loads_through_the_format_factory(tmp_path: Path) -> None:
    """``ssmd evaluate --format isic2018 <test folder>`` goes through the format factory."""
    write_part(tmp_path, "Test", TEST_ROWS, nested_csv=True)
    ds = build_classification_dataset("isic2018", tmp_path, image_size=8)
    assert len(ds) == 3 and ds.source.endswith(
        "ISIC2018_Task3_Test_GroundTruth/ISIC2018_Task3_Test_GroundTruth.csv"
    )


def test_root_may_be_the_image_folder_the_csv_folder_or_the_csv(tmp_path: Path) -> None:
    csv_path = write_part(tmp_path, "Validation", TEST_ROWS, nested_csv=True)
    for root in (
        tmp_path / "ISIC2018_Task3_Validation_Input",
        csv_path.parent,
        csv_path,
    ):
        layout = find_isic_layout(root)
        assert layout.part == "Validation" and layout.csv == csv_path, root
        assert layout.images == tmp_path / "ISIC2018_Task3_Validation_Input"
        assert layout.base == tmp_path


def test_several_parts_in_one_folder_name_the_folders_that_pick_one(tmp_path: Path) -> None:
    write_part(tmp_path, "Training", [("ISIC_1", 0), ("ISIC_2", 1)])
    write_part(tmp_path, "Test", TEST_ROWS)
    with pytest.raises(DataError, match="several ISIC 2018 Task 3 parts") as err:
        load_isic2018(tmp_path, image_size=8)
    assert str(tmp_path / "ISIC2018_Task3_Test_Input") in str(err.value)
    assert str(tmp_path / "ISIC2018_Task3_Training_Input") in str(err.value)
    test = load_isic2018(tmp_path / "ISIC2018_Task3_Test_Input", image_size=8)
    assert len(test) == 3 and "_Test_" in test.source
    train = load_isic2018(tmp_path / "ISIC2018_Task3_Training_Input", image_size=8)
    assert len(train) == 2 and "_Training_" in train.source


def test_lesion_ids_are_optional_outside_training(tmp_path: Path) -> None:
    write_part(tmp_path, "Test", TEST_ROWS)
    with (tmp_path / "lesion_ids.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows([["image", "lesion_id"], ["ISIC_0034524", "HAM_7"], ["ISIC_0000000", "HAM_1"]])
    ds = load_isic2018(tmp_path, image_size=8)  # a training image listed, two test ones not
    assert ds.groups == ["HAM_7", "ISIC_0034525", "ISIC_0034526"]


def test_no_part_names_the_files_looked_for(tmp_path: Path) -> None:
    (tmp_path / "ISIC2018_Task3_Test_Input").mkdir()
    with pytest.raises(DataError) as err:
        load_isic2018(tmp_path)
    text = str(err.value)
    for part in ("Training", "Validation", "Test"):
        assert f"ISIC2018_Task3_{part}_GroundTruth.csv" in text
    assert (
        "found ISIC2018_Task3_Test_Input/ but not its ISIC2018_Task3_Test_GroundTruth.csv" in text
    )
    with pytest.raises(DataError, match=r"Test_GroundTruth\.csv.*CSV file not found"):
        load_isic2018(tmp_path / "ISIC2018_Task3_Test_Input")


@pytest.mark.realdata
def test_real_training_layout_is_found_from_its_image_folder() -> None:
    root = SHARED / "isic2018_task3"
    if not root.is_dir():
        pytest.skip(f"real HAM10000 (ISIC 2018 layout) not found at {root}")
    for given in (root, root / "ISIC2018_Task3_Training_Input"):
        layout = find_isic_layout(given)
        assert layout.part == "Training" and layout.base == root
        assert layout.csv == root / "ISIC2018_Task3_Training_GroundTruth.csv"
