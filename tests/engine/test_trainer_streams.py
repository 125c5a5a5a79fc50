"""Named input streams: a task adds a stream (``weak``) without touching the trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from ssmd.engine.loader import BatchStream
from ssmd.engine.trainer import Trainer
from ssmd.methods.base import Method
from ssmd.structures.sample import Batch, Sample


class WeakMethod(Method):
    """Records the image ids of every ``weak`` batch it is given."""

    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.seen: list[list[int]] = []

    def training_step(
        self,
        labeled: Batch,
        unlabeled: Batch | None,
        step: int,
        max_iters: int,
        weak: Batch | None = None,  # optional: a further stream keeps the base signature
    ) -> dict[str, Tensor]:
        assert weak is not None
        self.seen.append([int(i) for i in weak.image_ids])
        loss = self.model(labeled.images.mean(dim=(2, 3))).pow(2).mean()
        return {"loss": loss}


class PlainMethod(Method):
    defaults: ClassVar[dict[str, Any]] = {}

    def training_step(
        self, labeled: Batch, unlabeled: Batch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        return {"loss": self.model(labeled.images.mean(dim=(2, 3))).pow(2).mean()}


def _samples(n: int) -> list[Sample]:
    return [
        Sample(
            torch.full((3, 4, 4), float(i)),
            torch.zeros((0, 4)),
            torch.zeros(0, dtype=torch.long),
            image_id=i + 1,
        )
        for i in range(n)
    ]


def _trainer(method: Method) -> Trainer:
    samples = _samples(6)
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    labeled = BatchStream(samples, [0, 1], batch_size=1, seed=0)
    weak = BatchStream(samples, [2, 3, 4, 5], batch_size=2, seed=3)
    return Trainer(method, opt, sched, labeled, None, 4, streams={"weak": weak})


def test_every_step_gets_a_batch_of_the_named_stream(tmp_path: Path) -> None:
    method = WeakMethod(nn.Linear(3, 1))
    trainer = _trainer(method)
    trainer.train()
    assert len(method.seen) == 4
    # two epochs of the weak part (ids 3..6), each a permutation of it
    assert sorted(method.seen[0] + method.seen[1]) == [3, 4, 5, 6]
    assert sorted(method.seen[2] + method.seen[3]) == [3, 4, 5, 6]
    assert trainer.state_dict()["weak_stream"] == {"epoch": 1, "position": 4}


def test_resume_restores_the_named_stream(tmp_path: Path) -> None:
    before = WeakMethod(nn.Linear(3, 1))
    first = _trainer(before)
    for _ in range(3):
        first.run_step()
        first.step += 1
    first.save(tmp_path / "mid.pt")
    first.run_step()
    method = WeakMethod(nn.Linear(3, 1))
    again = _trainer(method)
    again.resume(tmp_path / "mid.pt")
    again.run_step()
    assert method.seen == [before.seen[-1]]


def test_a_stream_the_method_cannot_receive_is_refused() -> None:
    with pytest.raises(ValueError, match=r"stream 'weak': PlainMethod.training_step has no"):
        _trainer(PlainMethod(nn.Linear(3, 1)))
