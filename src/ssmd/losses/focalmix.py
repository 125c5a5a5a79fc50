"""FocalMix's losses and target operations (Wang et al., CVPR 2020; as summarised in the slides
``focalmix-and-focal-loss-slides`` and re-implemented in 2D by the SSMD paper, Sec. 4.3).

* :func:`soft_focal_loss` — the soft-target focal loss, FocalMix Eq. (9)::

      SFL(p) = [a0 + y (a1 - a0)] * |y - p|^gamma * CE(y, p)
      CE(y, p) = -(y log p + (1 - y) log(1 - p))

  with ``a0 = 0.05, a1 = 0.95, gamma = 2`` (SSMD paper Sec. 4.3). For ``y`` in ``{0, 1}`` it is
  the sigmoid focal loss with ``alpha_t = a1`` on positives and ``a0`` on negatives.
* :func:`sharpen` — MixMatch's sharpening, FocalMix Eq. (4):
  ``Sharpen(y, T)_i = y_i^(1/T) / sum_j y_j^(1/T)`` (``T = 0.7``).
* :func:`mixup_lambda` / :func:`mixup` — image-level MixUp, Eq. (10)-(13):
  ``lambda ~ Beta(eta, eta)``, ``lambda' = max(lambda, 1 - lambda)``, and the same
  ``lambda'`` mixes images (``x^ = lambda' x + (1 - lambda') x'``) and their anchor targets.
* :func:`soft_focal_detection_loss` — the per-batch detection loss with soft class targets.

Choices where the sources are silent (documented at the function they belong to):

* **Softmax detectors**: the SFL is binary; with ``K + 1`` softmax outputs each foreground
  class ``c`` is scored with ``p = softmax[c]`` against ``y_c`` (for ``K = 1`` this is exactly
  the binary loss on ``p = 1 - p[0]``). Sigmoid detectors use ``p = sigmoid(logit_c)``.
* **Normalisation**: a batch sum divided by ``max(1, sum of the soft foreground targets)``, the
  soft version of RetinaNet's division by the number of foreground anchors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssmd.losses.detection import smooth_l1_loss

__all__ = [
    "fg_probabilities",
    "mixup",
    "mixup_lambda",
    "one_hot_targets",
    "sharpen",
    "soft_focal_detection_loss",
    "soft_focal_loss",
]

ALPHA0 = 0.05
ALPHA1 = 0.95
GAMMA = 2.0


def soft_focal_loss(
    p: Tensor,
    y: Tensor,
    alpha0: float = ALPHA0,
    alpha1: float = ALPHA1,
    gamma: float = GAMMA,
    eps: float = 1e-6,
) -> Tensor:
    """Soft-target focal loss, FocalMix Eq. (9), element-wise.

    Args:
        p: predicted probabilities of the positive class, any shape.
        y: soft targets in ``[0, 1]``, same shape.
        alpha0: weight of a pure negative target (``y = 0``).
        alpha1: weight of a pure positive target (``y = 1``).
        gamma: focusing exponent on ``|y - p|``.
        eps: ``p`` is clamped to ``[eps, 1 - eps]`` inside the logarithms.

    Returns:
        ``Tensor`` of the shape of ``p``, unreduced.
    """
    if p.shape != y.shape:
        raise ValueError(f"soft_focal_loss: p {tuple(p.shape)} and y {tuple(y.shape)} differ")
    pc = p.clamp(eps, 1.0 - eps)
    ce = -(y * pc.log() + (1.0 - y) * (1.0 - pc).log())
    weight = alpha0 + y * (alpha1 - alpha0)
    return weight * (y - p).abs().pow(gamma) * ce


def sharpen(p: Tensor, temperature: float = 0.7, dim: int = -1) -> Tensor:
    """MixMatch / FocalMix Eq. (4): ``p_i^(1/T) / sum_j p_j^(1/T)`` along ``dim``.

    Computed as ``softmax(log p / T)`` (stable for tiny probabilities). ``T < 1`` lowers the
    entropy; ``T = 1`` returns ``p`` (renormalised).

    Args:
        p: distributions along ``dim`` (non-negative, summing to 1), e.g. ``Tensor[B, N, K+1]``
            averaged class probabilities of unlabeled anchors.
        temperature: ``T > 0``.
    """
    if temperature <= 0:
        raise ValueError(f"sharpen temperature must be > 0, got {temperature}")
    return (p.clamp_min(torch.finfo(p.dtype).tiny).log() / temperature).softmax(dim)


def mixup_lambda(n: int, eta: float = 0.2) -> Tensor:
    """``n`` MixUp weights ``lambda' = max(lambda, 1 - lambda)``, ``lambda ~ Beta(eta, eta)`` (Eq. (10)-(11)).

    ``lambda' >= 0.5`` keeps each mixed image closer to its first image, whose place in the
    batch (labeled or unlabeled part) it keeps. Draws from torch's global RNG, which the
    trainer's checkpoints store, so a resumed run draws the same weights.
    """
    if eta <= 0:
        raise ValueError(f"mixup eta must be > 0, got {eta}")
    lam = torch.distributions.Beta(float(eta), float(eta)).sample((n,))  # (n,)
    return torch.maximum(lam, 1.0 - lam)


def mixup(a: Tensor, b: Tensor, lam: Tensor) -> Tensor:
    """``lambda' a + (1 - lambda') b`` with one ``lambda'`` per item of dim 0 (Eq. (12)-(13)).

    Args:
        a: ``Tensor[B, ...]`` (images ``(B, C, H, W)`` or anchor targets ``(B, N, K)``).
        b: the partners, same shape.
        lam: ``Tensor[B]``.
    """
    if a.shape != b.shape or lam.shape != a.shape[:1]:
        raise ValueError(
            f"mixup: a {tuple(a.shape)}, b {tuple(b.shape)}, lam {tuple(lam.shape)} do not match"
        )
    w = lam.to(a.dtype).view(-1, *([1] * (a.ndim - 1)))  # (B, 1, ...)
    return w * a + (1.0 - w) * b


def fg_probabilities(cls_logits: Tensor, activation: str = "softmax") -> Tensor:
    """Per-class foreground probabilities ``Tensor[B, N, K]`` from flat logits.

    Args:
        cls_logits: ``Tensor[B, N, K+1]`` (softmax, index 0 background) or ``Tensor[B, N, K]``.
        activation: ``"softmax"`` or ``"sigmoid"``.
    """
    if activation == "softmax":
        return cls_logits.softmax(-1)[..., 1:]
    if activation == "sigmoid":
        return cls_logits.sigmoid()
    raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")


def soft_focal_detection_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    cls_targets: Tensor,
    valid: Tensor,
    box_terms: list[tuple[Tensor, Tensor]],
    *,
    activation: str = "softmax",
    alpha0: float = ALPHA0,
    alpha1: float = ALPHA1,
    gamma: float = GAMMA,
    beta: float = 1.0 / 9.0,
) -> dict[str, Tensor]:
    """SFL classification + weighted smooth-L1 box loss of a (mixed) batch.

    Args:
        cls_logits: ``Tensor[B, N, K+1]`` (softmax) or ``Tensor[B, N, K]`` (sigmoid), flat
            anchor order.
        box_deltas: ``Tensor[B, N, 4]`` predicted Eq. (3) deltas.
        cls_targets: ``Tensor[B, N, K]`` soft targets in ``[0, 1]`` (all 0 = background).
        valid: ``Tensor[B, N]`` 0/1 (or soft) weight of each anchor's class term; ignored
            anchors get 0.
        box_terms: ``[(targets Tensor[B, N, 4], weights Tensor[B, N]), ...]`` summed; a MixUp
            of two images contributes ``(t_a, lambda' w_a)`` and ``(t_b, (1 - lambda') w_b)``
            (the loss of a mixed box target is the mix of the two losses: deltas of two
            different objects have no meaningful average).
        activation: the detector's output activation.
        alpha0: SFL weight of negative targets.
        alpha1: SFL weight of positive targets.
        gamma: SFL focusing exponent.
        beta: smooth-L1 ``beta`` (as the supervised loss).

    Returns:
        ``{"loss_cls", "loss_box"}``, each a batch sum over anchors divided by
        ``max(1, sum(valid * cls_targets))`` (the soft number of foreground anchors).
    """
    p = fg_probabilities(cls_logits, activation)  # (B, N, K)
    if p.shape != cls_targets.shape or valid.shape != p.shape[:2]:
        raise ValueError(
            f"soft_focal_detection_loss: probabilities {tuple(p.shape)}, targets "
            f"{tuple(cls_targets.shape)}, valid {tuple(valid.shape)} do not match"
        )
    v = valid.to(p.dtype)
    normaliser = (cls_targets * v[..., None]).sum().clamp_min(1.0)
    cls = soft_focal_loss(p, cls_targets, alpha0, alpha1, gamma).sum(-1)  # (B, N)
    loss_cls = (cls * v).sum() / normaliser
    loss_box = box_deltas.new_zeros(())
    for targets, weights in box_terms:
        per_anchor = smooth_l1_loss(box_deltas, targets, beta=beta).sum(-1)  # (B, N)
        loss_box = loss_box + (per_anchor * weights.to(p.dtype)).sum()
    return {"loss_cls": loss_cls, "loss_box": loss_box / normaliser}


def one_hot_targets(anchor_labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Hard anchor labels (``1..K``, ``0`` background, negative ignored) as SFL targets.

    Returns:
        ``(targets Tensor[B, N, K] in {0, 1}, valid Tensor[B, N] bool)``.
    """
    onehot = F.one_hot(anchor_labels.clamp(min=0), num_classes + 1)[..., 1:]  # (B, N, K)
    return onehot.float(), anchor_labels >= 0
