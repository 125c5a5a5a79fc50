"""Optimiser, learning-rate schedule and seeding from the ``train`` section (every task's)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from ssmd.config import ConfigError
from ssmd.engine.schedules import lr_factor

__all__ = ["build_optimizer", "build_scheduler", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels on CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def build_optimizer(params: list[nn.Parameter], train_cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam (the SSMD paper's choice) or SGD with momentum."""
    name = train_cfg["optimizer"]
    lr, wd = float(train_cfg["lr"]), float(train_cfg["weight_decay"])
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=float(train_cfg["momentum"]), weight_decay=wd
        )
    raise ConfigError(f"train.optimizer = {name!r}: expected adam or sgd")


def build_scheduler(
    optimizer: torch.optim.Optimizer, train_cfg: dict[str, Any]
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor of the ``train`` section (warm-up, then step/cosine/constant)."""
    max_iters = int(train_cfg["max_iters"])
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(
            step,
            max_iters=max_iters,
            schedule=train_cfg["schedule"],
            warmup_iters=int(train_cfg["warmup_iters"]),
            step_at=float(train_cfg["step_at"]),
            gamma=float(train_cfg["gamma"]),
        ),
    )
