"""Deterministic, resumable batch streams over a dataset (no worker processes).

Training on a 2-core CPU gains nothing from loader worker processes, and a
single-process stream can be checkpointed exactly: its whole state is
``(epoch, position)``, and the permutation of epoch ``e`` is drawn from
``torch.Generator().manual_seed(seed * 1_000_003 + e)`` — the same on every
machine. Random augmentation draws from torch's global RNG, whose state the
checkpoint also stores, so a resumed run sees exactly the batches it would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from ssmd.structures.sample import Batch, Sample, collate

__all__ = ["BatchStream", "PermutationSampler", "PreparedSamples"]


class PermutationSampler:
    """Shuffled index batches without repeats: a fresh permutation per epoch, remainder dropped.

    The sampler of the classification and pretraining streams (the detection
    :class:`BatchStream` keeps its per-epoch seeded order, which the committed detection
    cells were trained with). Its generator is exposed (:attr:`generator`) because a stream
    may draw its augmentation from it too; :meth:`state_dict` holds the generator state, the
    epoch, the position and the permutation, so a resumed stream continues exactly.

    Args:
        indices: the dataset positions drawn from (at least ``min_batch``).
        batch_size: indices per batch, capped at ``len(indices)`` and raised to ``min_batch``.
        seed: generator seed.
        min_batch: the smallest batch the stream accepts (2 for contrastive views).
    """

    def __init__(
        self, indices: Sequence[int], batch_size: int, seed: int, min_batch: int = 1
    ) -> None:
        if len(indices) < max(1, min_batch):
            raise ValueError(
                f"a batch stream needs at least {max(1, min_batch)} image(s), got {len(indices)}"
            )
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)
        self.batch_size = max(min_batch, min(int(batch_size), len(self.indices)))
        self.generator = torch.Generator().manual_seed(int(seed))
        self.epoch = 0
        self.pos = 0
        self.perm = torch.randperm(len(self.indices), generator=self.generator)

    def take(self) -> Tensor:
        """The next batch of dataset positions ``Tensor[batch_size]`` (int64)."""
        if self.pos + self.batch_size > len(self.perm):
            self.epoch += 1
            self.pos = 0
            self.perm = torch.randperm(len(self.indices), generator=self.generator)
        idx = self.indices[self.perm[self.pos : self.pos + self.batch_size]]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "pos": self.pos,
            "perm": self.perm.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])
        self.pos = int(state["pos"])
        self.perm = state["perm"].clone()


class PreparedSamples:
    """Samples after their deterministic preparation (read + resize), optionally cached.

    Args:
        dataset: anything indexable that returns :class:`Sample` (a ``DetectionDataset``).
        prepare: deterministic transform applied once per image (e.g. resize + pad).
        cache: keep prepared samples in memory; reading and resizing a large PNG
            each step would otherwise dominate a CPU training step.
    """

    def __init__(
        self, dataset: Any, prepare: Callable[[Sample], Sample] | None = None, cache: bool = True
    ) -> None:
        self.dataset = dataset
        self.prepare = prepare
        self.cache = cache
        self._cache: dict[int, Sample] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        if index in self._cache:
            return self._cache[index]
        sample: Sample = self.dataset[index]
        if self.prepare is not None:
            sample = self.prepare(sample)
        if self.cache:
            self._cache[index] = sample
        return sample


class BatchStream:
    """An endless, resumable stream of batches drawn without replacement per epoch.

    Args:
        samples: indexable source of samples (e.g. :class:`PreparedSamples`).
        indices: which items of ``samples`` this stream draws from.
        batch_size: samples per batch; a batch may span an epoch boundary.
        seed: permutation seed.
        augment: random transform applied to every drawn sample (uses torch's global RNG).
        is_labeled: overrides ``Sample.is_labeled`` for every drawn sample when set.
    """

    def __init__(
        self,
        samples: Any,
        indices: Sequence[int],
        batch_size: int,
        seed: int,
        augment: Callable[[Sample], Sample] | None = None,
        is_labeled: bool | None = None,
    ) -> None:
        if len(indices) == 0:
            raise ValueError(
                "BatchStream needs at least one image; the split left this stream empty"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size = {batch_size}: must be >= 1")
        self.samples = samples
        self.indices = list(indices)
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.is_labeled = is_labeled
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.indices), generator=gen).tolist()
        return [self.indices[i] for i in perm]

    def _next_index(self) -> int:
        if self.position >= len(self._order):
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        index = self._order[self.position]
        self.position += 1
        return index

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        drawn = []
        for _ in range(self.batch_size):
            sample: Sample = self.samples[self._next_index()]
            if self.augment is not None:
                sample = self.augment(sample)
            if self.is_labeled is not None:
                sample = sample.replace(is_labeled=self.is_labeled)
            drawn.append(sample)
        return collate(drawn)

    def state_dict(self) -> dict[str, int]:
        """``(epoch, position)``: all a resumed stream needs."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved ``(epoch, position)``."""
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = self._permutation(self.epoch)
