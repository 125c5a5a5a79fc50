"""VICRegL: variance-invariance-covariance regularisation of global *and local* features.

Bardes, Ponce and LeCun, "VICRegL: Self-Supervised Learning of Local Visual Features"
(NeurIPS 2022). The global term is VICReg (Bardes et al., ICLR 2022, Eq. (6)): the pooled
features of two views, projected by an MLP, are pulled together (invariance, mean squared
distance, weight ``lambda``), while each dimension keeps a standard deviation of at least 1
over the batch (variance, hinge, weight ``mu``) and different dimensions are decorrelated
(covariance, weight ``nu``). The local term (VICRegL Sec. 3.2) applies the same criterion to
the feature vectors of the two views' *feature maps*, matched in two ways — by location in the
image (each cell to the nearest cell of the other view, through the views' location grids;
Eq. (3)) and by feature distance (Eq. (4)) — keeping the best ``num_matches`` pairs. The total
is ``alpha * global + (1 - alpha) * local`` (Eq. (5)).

Loss and heads are lightly's (``VICRegLLoss``, ``VICRegProjectionHead``,
``VicRegLLocalProjectionHead``); the location grids come from the augmentation, which records
where every view lies in its image (:meth:`ssmd.pretrain.views.ViewBatch.grid`), exact under
the crops, flips and 90-degree rotations microscopy needs.

Why it is the dense method here: it trains the feature *maps* a detector's FPN and head read,
not only their pooled mean; like SimCLR it needs one trunk and no momentum encoder, memory bank
or decoder (DenseCL needs a momentum encoder and a 65k-entry queue; masked image modelling on a
CNN needs a decoder and many more steps), so on a 2-core CPU a step costs about what a SimCLR
step costs. ``local_map`` picks the map: ``-1`` is the last (``C5``, as the paper), ``-2`` the
``C4`` of a detector's trunk (stride 16, finer cells for small objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ssmd.pretrain.base import PRETRAIN_METHODS, PretrainMethod, feature_maps, require_lightly
from ssmd.pretrain.views import ViewBatch

__all__ = ["VICRegL"]


@PRETRAIN_METHODS.register("vicregl")
class VICRegL(PretrainMethod):
    """VICRegL on the trunk's pooled last map and one of its maps (module docstring).

    Args:
        backbone: the trunk to pretrain.
        channels: channels of its feature maps.
        global_dim: output dimension of the global projector (3 layers).
        local_dim: output dimension of the local projector (applied at every map cell).
        hidden_dim: hidden width of both projectors.
        local_map: index of the map the local term uses (``-1``: the last).
        alpha: weight of the global term (Eq. (5)).
        lambda_param: invariance weight.
        mu_param: variance weight.
        nu_param: covariance weight.
        num_matches: pairs kept by the two nearest-neighbour matchings (lightly's order).
    """

    method_name: ClassVar[str] = "vicregl"
    defaults: ClassVar[dict[str, Any]] = {
        "global_dim": 512,
        "local_dim": 128,
        "hidden_dim": 512,
        "local_map": -1,
        "alpha": 0.75,
        "lambda_param": 25.0,
        "mu_param": 25.0,
        "nu_param": 1.0,
        "num_matches": [20, 4],
    }

    def __init__(
        self,
        backbone: nn.Module,
        channels: Sequence[int],
        global_dim: int = 512,
        local_dim: int = 128,
        hidden_dim: int = 512,
        local_map: int = -1,
        alpha: float = 0.75,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        num_matches: Sequence[int] = (20, 4),
    ) -> None:
        require_lightly()
        from lightly.loss import VICRegLLoss
        from lightly.models.modules.heads import VicRegLLocalProjectionHead, VICRegProjectionHead

        n = len(channels)
        if not -n <= int(local_map) < n:
            raise ValueError(
                f"pretrain.method.local_map = {local_map!r}: the trunk returns {n} map(s) "
                f"(channels {list(channels)}), so use -{n}..{n - 1}"
            )
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"pretrain.method.alpha = {alpha!r}: must be in [0, 1]")
        if len(num_matches) != 2 or min(int(m) for m in num_matches) < 1:
            raise ValueError(
                f"pretrain.method.num_matches = {list(num_matches)!r}: need two counts >= 1"
            )
        heads = {
            "projection": VICRegProjectionHead(int(channels[-1]), int(hidden_dim), int(global_dim)),
            "local_projection": VicRegLLocalProjectionHead(
                int(channels[int(local_map)]), int(hidden_dim), int(local_dim)
            ),
        }
        super().__init__(backbone, channels, heads)
        self.local_map = int(local_map)
        self.params: dict[str, Any] = {
            "global_dim": int(global_dim),
            "local_dim": int(local_dim),
            "hidden_dim": int(hidden_dim),
            "local_map": int(local_map),
            "alpha": float(alpha),
            "lambda_param": float(lambda_param),
            "mu_param": float(mu_param),
            "nu_param": float(nu_param),
            "num_matches": [int(m) for m in num_matches],
        }
        self.criterion = VICRegLLoss(
            lambda_param=float(lambda_param),
            mu_param=float(mu_param),
            nu_param=float(nu_param),
            alpha=float(alpha),
            num_matches=(int(num_matches[0]), int(num_matches[1])),
        )

    def features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Projected global ``Tensor[N, global_dim]`` and local ``Tensor[N, h, w, local_dim]``."""
        maps = feature_maps(self.backbone, images)
        g = self.model["projection"](maps[-1].mean(dim=(2, 3)))  # type: ignore[index]
        local = maps[self.local_map].permute(0, 2, 3, 1)  # (N, h, w, C)
        return g, self.model["local_projection"](local)  # type: ignore[index]

    def training_step(  # type: ignore[override]
        self, labeled: ViewBatch, unlabeled: None, step: int, max_iters: int
    ) -> dict[str, Tensor]:
        """Eq. (5) over the views (global + location- and feature-matched local terms)."""
        b = len(labeled)
        g, local = self.features(torch.cat(labeled.views))  # (V*B, D), (V*B, h, w, D')
        h, w = int(local.shape[1]), int(local.shape[2])
        grids = [labeled.grid(v, h, w) for v in range(len(labeled.views))]  # V x (B, h, w, 2)
        views = list(zip(g.split(b), local.split(b), strict=True))
        loss = self.criterion(global_view_features=views, global_view_grids=grids).sum()
        return {"loss": loss, "loss_vicregl": loss.detach()}

    def describe(self) -> dict[str, Any]:
        return {"name": self.method_name, **self.params}
