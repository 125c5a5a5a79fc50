from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from ssmd.engine.checkpoint import load_checkpoint
from ssmd.engine.hooks import CheckpointHook, EvalHook, LoggingHook
from ssmd.engine.loader import BatchStream
from ssmd.engine.trainer import NonFiniteLossError, Trainer
from ssmd.methods.base import Method
from ssmd.structures.sample import Batch, Sample


class ToyMethod(Method):
    uses_unlabeled: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}

    def training_step(
        self, labeled: Batch, unlabeled: Batch | None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        assert unlabeled is not None
        pred = self.model(labeled.images.mean(dim=(2, 3)))
        sup = (pred - 1.0).pow(2).mean()
        unsup = self.model(unlabeled.images.mean(dim=(2, 3))).pow(2).mean()
        return {"loss_sup": sup, "loss_unsup": unsup, "loss": sup + 0.1 * unsup}


def make_samples(n: int) -> list[Sample]:
    gen = torch.Generator().manual_seed(0)
    return [
        Sample(
            torch.rand(3, 8, 8, generator=gen),
            torch.zeros((0, 4)),
            torch.zeros(0, dtype=torch.long),
            image_id=i + 1,
        )
        for i in range(n)
    ]


def noisy(sample: Sample) -> Sample:
    return sample.replace(image=sample.image + 0.1 * torch.randn_like(sample.image))


def make_trainer(tmp_path: Path, max_iters: int = 8, lr: float = 0.05) -> Trainer:
    torch.manual_seed(0)
    samples = make_samples(10)
    method = ToyMethod(nn.Linear(3, 1))
    opt = torch.optim.Adam(method.trainable_parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    labeled = BatchStream(samples, [0, 1, 2], batch_size=2, seed=1, augment=noisy)
    unlabeled = BatchStream(
        samples, list(range(3, 10)), batch_size=3, seed=2, augment=noisy, is_labeled=False
    )
    evaluate = lambda tr: {"AP": -float(tr.last_losses["loss"])}  # noqa: E731
    hooks = [
        LoggingHook(tmp_path, every=2, progress=False),
        EvalHook(evaluate, tmp_path, every=4),
        CheckpointHook(tmp_path, every=4),
    ]
    return Trainer(
        method,
        opt,
        sched,
        labeled,
        unlabeled,
        max_iters,
        hooks,
        grad_clip=1.0,
        extra_state={"config": {"seed": 0}},
    )


def test_resume_gives_the_same_next_losses(tmp_path: Path) -> None:
    full = make_trainer(tmp_path / "full")
    losses = []
    for _ in range(8):
        full.run_step()
        full.step += 1
        losses.append(full.last_losses["loss"])
    first = make_trainer(tmp_path / "a")
    for _ in range(4):
        first.run_step()
        first.step += 1
    first.save(tmp_path / "a" / "mid.pt")
    torch.manual_seed(123)  # disturb the global RNG: resume must restore it
    resumed = make_trainer(tmp_path / "b")
    resumed.resume(tmp_path / "a" / "mid.pt")
    assert resumed.step == 4
    after = []
    for _ in range(4):
        resumed.run_step()
        resumed.step += 1
        after.append(resumed.last_losses["loss"])
    assert after == pytest.approx(losses[4:], rel=0, abs=1e-7)


def test_hooks_write_checkpoints_metrics_and_best(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path)
    trainer.train()
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "best.pt").is_file()
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["kind"] == "ssmd-model" and "weight" in best["model"]
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 8 and last["config"] == {"seed": 0}
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in r for r in rows) and any("val/AP" in r for r in rows)


def test_unsupervised_loss_reaches_the_model(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path)
    before = trainer.method.model.weight.detach().clone()
    trainer.run_step()
    assert not torch.equal(before, trainer.method.model.weight)


def test_non_finite_loss_stops_before_the_update(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path)
    trainer.save(tmp_path / "good.pt")
    with torch.no_grad():
        trainer.method.model.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"step 0.*good\.pt"):
        trainer.run_step()


def test_stream_is_deterministic_and_wraps_epochs() -> None:
    samples = make_samples(5)
    a = BatchStream(samples, [0, 1, 2, 3, 4], batch_size=3, seed=7)
    b = BatchStream(samples, [0, 1, 2, 3, 4], batch_size=3, seed=7)
    ids_a = [next(a).image_ids for _ in range(4)]
    ids_b = [next(b).image_ids for _ in range(4)]
    assert ids_a == ids_b
    flat = [i for ids in ids_a for i in ids]
    assert sorted(flat[:5]) == [1, 2, 3, 4, 5]  # first epoch is a permutation
    with pytest.raises(ValueError, match="empty"):
        BatchStream(samples, [], batch_size=2, seed=0)
