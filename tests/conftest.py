"""Shared fixtures: paths to the real data in ../shared/data (tests skip when absent)."""

from __future__ import annotations

import os
from pathlib import Path

# OpenMP threads that spin while waiting make convolutions ~100x slower when the 2 cores are
# shared with another process; sleeping threads cost nothing measurable here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    """Keep every test on the 2 cores CI has, and deterministic."""
    torch.set_num_threads(2)
    torch.manual_seed(0)


@pytest.fixture
def dsb_root() -> Path:
    root = SHARED_DATA / "dsb2018" / "stage1_train"
    if not root.is_dir():
        pytest.skip(f"real DSB data not found at {root}")
    return root
