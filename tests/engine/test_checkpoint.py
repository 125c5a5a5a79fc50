from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ssmd.engine.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from ssmd.engine.schedules import lr_factor


class Payload:
    """A class outside torch's safe list: loading it would need full unpickling."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this would run at load time",))


def test_round_trip_and_no_temp_files_left(tmp_path: Path) -> None:
    state = {"w": torch.arange(3.0), "step": 7, "cfg": {"a": [1, 2]}, "rng": capture_rng_state()}
    path = save_checkpoint(state, tmp_path / "ck" / "last.pt")
    loaded = load_checkpoint(path)
    assert (
        torch.equal(loaded["w"], state["w"])
        and loaded["step"] == 7
        and loaded["cfg"] == {"a": [1, 2]}
    )
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_pickled_payload_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    path.write_bytes(pickle.dumps({"x": 1})[:5])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_rng_state_survives_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_lr_schedules() -> None:
    kw = {"max_iters": 100, "warmup_iters": 0}
    assert lr_factor(74, schedule="step", **kw) == 1.0
    assert lr_factor(75, schedule="step", **kw) == pytest.approx(0.1)
    assert lr_factor(0, schedule="cosine", **kw) == 1.0
    assert lr_factor(50, schedule="cosine", **kw) == pytest.approx(0.5)
    assert lr_factor(0, schedule="constant", max_iters=100, warmup_iters=10) == pytest.approx(0.1)
    assert lr_factor(9, schedule="constant", max_iters=100, warmup_iters=10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, schedule="poly", **kw)


def test_messages_say_what_a_non_checkpoint_file_is(tmp_path: Path) -> None:
    """Issue 24: JSON and random bytes were "a pickled payload", an empty file had no reason."""
    cases = {
        "metrics.json": (b'{"AP": 0.5}', r"a JSON file \(it starts with '\{\"AP\": 0\.5\}'\)"),
        "random.pt": (
            b"\x91\xd7\xaa.\x1bq\x97+" + np.random.default_rng(0).bytes(200),
            r"unrecognised binary data \(first bytes: 91 d7 aa 2e 1b 71 97 2b\)",
        ),
        "empty.pt": (b"", r"empty file \(0 bytes\)"),
        "config.pt": (b"train:\n  lr: 0.1\n", r"a text file \(it starts with 'train:'\)"),
        "image.pt": (b"\x89PNG\r\n\x1a\n" + bytes(20), "a PNG image"),
    }
    for name, (data, pattern) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=pattern) as err:
            load_checkpoint(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: "), name
        assert "could run code" not in str(err.value), name


def test_folder_truncated_and_foreign_zip_are_named(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint file$"):
        load_checkpoint(run)
    save_checkpoint({"step": 1}, run / "best.pt")
    with pytest.raises(CheckpointError, match=r"is a folder.*it holds best\.pt: pass one of those"):
        load_checkpoint(run)
    whole = (run / "best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated zip file"):
        load_checkpoint(tmp_path / "cut.pt")
    np.savez(tmp_path / "arrays.npz", x=np.zeros(3))
    with pytest.raises(
        CheckpointError, match=r"a zip archive that is not a torch checkpoint \(it holds x\.npy\)"
    ):
        load_checkpoint(tmp_path / "arrays.npz")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match="pickle file that weights_only loading cannot read"):
        load_checkpoint(tmp_path / "plain.pkl")


def test_refused_payload_names_the_object(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": Payload()}, path)
    with pytest.raises(
        CheckpointError, match=r"refused to load: the file carries an object of type \S*print"
    ):
        load_checkpoint(path)
