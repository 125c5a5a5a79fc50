"""Inputs that must fail before training starts, naming the key and the value (issue 24)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ssmd.config import ConfigError, load_config
from ssmd.data.factory import DATASET_FORMATS
from ssmd.tasks import classification
from ssmd.tasks import detection as build
from ssmd.utils.paths import prepare_output_dir


def test_unknown_detection_format_lists_the_formats() -> None:
    with pytest.raises(ConfigError) as err:
        build.dataset_from_config(load_config(None, ["data.format=bogus"])["data"])
    known = ", ".join(DATASET_FORMATS.names())  # others register formats too
    assert f"data.format = 'bogus': unknown format; known: {known}" in str(err.value)
    assert {"coco", "dsb2018", "images", "synthetic"} <= set(DATASET_FORMATS.names())
    assert "data.root" not in str(err.value)


def test_unknown_classification_format_lists_the_formats() -> None:
    cfg = load_config(None, ["task=classification", "data.format=bogus"])
    with pytest.raises(ConfigError, match=r"data\.format = 'bogus'.*medmnist, isic2018"):
        classification.build_classification_dataset_from_config(cfg["data"])


def test_output_dir_under_a_file_fails_before_the_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("x")
    read: list[object] = []
    monkeypatch.setattr(build, "build_data", lambda *a, **k: read.append(a))
    monkeypatch.setattr(classification, "build_classification_data", lambda *a, **k: read.append(a))
    bad = tmp_path / "file" / "run"
    with pytest.raises(
        ConfigError, match=rf"output_dir = '{bad}': is under {tmp_path / 'file'}, which is a file"
    ):
        build.run_training(load_config(None, [f"output_dir={bad}"]))
    with pytest.raises(ConfigError, match=r"output_dir = .*: is a file, not a folder"):
        classification.run_classification_training(
            load_config(None, ["task=classification", f"output_dir={tmp_path / 'file'}"])
        )
    assert read == []


def test_output_dir_that_cannot_be_created_names_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(
        ConfigError, match=r"output_dir = '.*new': cannot create the folder: Permission denied"
    ):
        prepare_output_dir(tmp_path / "new")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_output_dir_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        with pytest.raises(ConfigError, match="output_dir"):
            prepare_output_dir(ro / "run")
        with pytest.raises(ConfigError, match="not writable"):
            prepare_output_dir(ro)
    finally:
        ro.chmod(0o700)
