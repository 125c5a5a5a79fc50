"""SimCLR: contrastive learning of global image features.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (ICML
2020). Two random views of each image go through the trunk, global average pooling and a
projection MLP ``g`` (Sec. 2.1: ``z = g(h)``); the NT-Xent loss (Eq. (1))

    l(i, j) = -log( exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) ),

with ``sim`` the cosine similarity, is averaged over the ``2B`` positive pairs of a batch: each
view must pick its partner out of the ``2B - 1`` other views. The loss and the projection head
are lightly's (``NTXentLoss``, ``SimCLRProjectionHead``, Sec. B.1's 2-layer MLP with
BatchNorm). With more than two views every pair of views contributes, averaged.

Why it is the global method here: one trunk, no momentum encoder or memory bank, so a step
costs two forward/backward passes of the trunk — the least a two-view method can cost on a
2-core CPU — and its loss is a closed form a test can check by hand. Its known weakness, the
need for many negatives, is mild at the batch sizes a CPU affords when the temperature is low
(``tau = 0.2`` by default; the paper's Table 5 shows lower temperatures help smaller batches).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ssmd.pretrain.base import PRETRAIN_METHODS, PretrainMethod, feature_maps, require_lightly
from ssmd.pretrain.views import ViewBatch

__all__ = ["SimCLR"]


@PRETRAIN_METHODS.register("simclr")
class SimCLR(PretrainMethod):
    """SimCLR on the trunk's last feature map (module docstring).

    Args:
        backbone: the trunk to pretrain.
        channels: channels of its feature maps (the last is pooled).
        temperature: ``tau`` of Eq. (1).
        hidden_dim: hidden width of the projection MLP.
        output_dim: dimension of ``z``.
    """

    method_name: ClassVar[str] = "simclr"
    defaults: ClassVar[dict[str, Any]] = {
        "temperature": 0.2,
        "hidden_dim": 512,
        "output_dim": 128,
    }

    def __init__(
        self,
        backbone: nn.Module,
        channels: Sequence[int],
        temperature: float = 0.2,
        hidden_dim: int = 512,
        output_dim: int = 128,
    ) -> None:
        require_lightly()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        if not float(temperature) > 0:
            raise ValueError(f"pretrain.method.temperature = {temperature!r}: must be > 0")
        head = SimCLRProjectionHead(int(channels[-1]), int(hidden_dim), int(output_dim))
        super().__init__(backbone, channels, {"projection": head})
        self.temperature = float(temperature)
        self.hidden_dim, self.output_dim = int(hidden_dim), int(output_dim)
        self.criterion = NTXentLoss(temperature=self.temperature)

    def embed(self, images: Tensor) -> Tensor:
        """``z = g(pool(f(x)))`` of images ``Tensor[N, C, S, S]`` -> ``Tensor[N, output_dim]``."""
        h = feature_maps(self.backbone, images)[-1].mean(dim=(2, 3))  # (N, C5)
        return self.model["projection"](h)  # type: ignore[index]

    def training_step(  # type: ignore[override]
        self, labeled: ViewBatch, unlabeled: None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        """NT-Xent over every pair of views (Eq. (1)); the views share one trunk pass."""
        b = len(labeled)
        z = self.embed(torch.cat(labeled.views))  # (V * B, D)
        zs = z.split(b)  # V x (B, D)
        pairs = list(itertools.combinations(range(len(zs)), 2))
        loss = torch.stack([self.criterion(zs[i], zs[j]) for i, j in pairs]).mean()
        return {"loss": loss, "loss_simclr": loss.detach()}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.method_name,
            "temperature": self.temperature,
            "hidden_dim": self.hidden_dim,
            "output_dim": self.output_dim,
        }
