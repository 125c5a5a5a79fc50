"""One network's weights out of a run checkpoint (the load path every task shares)."""

from __future__ import annotations

import pytest
import torch

from ssmd.engine.checkpoint import CheckpointError, network_weights


def test_model_checkpoint_gives_student_or_teacher() -> None:
    s, t = {"w": torch.ones(1)}, {"w": torch.zeros(1)}
    state = {"kind": "ssmd-model", "model": s, "teacher": t}
    assert network_weights(state)["w"].item() == 1.0
    assert network_weights(state, "teacher")["w"].item() == 0.0
    with pytest.raises(CheckpointError, match=r"best.pt: field 'teacher' missing: this run has no"):
        network_weights({"kind": "ssmd-model", "model": s}, "teacher", "best.pt")


def test_training_checkpoint_strips_the_method_prefix() -> None:
    method = {"model.a": torch.ones(1), "teacher.a": torch.zeros(1), "model.b.c": torch.ones(2)}
    state = {"kind": "ssmd-train", "method": method}
    assert sorted(network_weights(state)) == ["a", "b.c"]
    assert sorted(network_weights(state, "teacher")) == ["a"]
    with pytest.raises(CheckpointError, match=r"no teacher weights in field 'method'"):
        network_weights({"kind": "ssmd-train", "method": {"model.a": 1}}, "teacher")


def test_other_kinds_are_refused() -> None:
    with pytest.raises(CheckpointError, match=r"x.pt: field 'kind' = 'pretrain'"):
        network_weights({"kind": "pretrain"}, source="x.pt")
