"""Losses of semi-supervised classification: Mean Teacher, SRC-MT and STSC.

Equations are numbered as in the STSC paper (Lei, Liu & Liu, "Spatio-temporal structure
consistency for semi-supervised medical image classification"):

* Eq. (2), :func:`individual_consistency`: ``||f(x; theta', eta') - f(x; theta, eta)||_2^2`` between
  teacher and student class probabilities (Mean Teacher).
* Eq. (3), :func:`relation_matrix`: case-level Gram matrix ``M = D D^T`` of a batch's features,
  each row L2-normalised (SRC-MT's sample relation matrix).
* Eq. (4), :func:`spatial_structure_consistency`: ``(1/B) ||R(theta, eta) - R(theta', eta')||_F^2``.
* Eq. (5), :func:`binarize_relation`: adjacency ``A = [R >= tau]``.
* :func:`stable_substructures`: the sub-structures connected at both ``t - 1`` and ``t``.
* Eq. (6), :func:`temporal_substructure_consistency`:
  ``sum_i (1/B) ||R_t[s_i, s_i] - R_{t-1}[s_i, s_i]||_F^2``.

Choices where the paper is silent (each repeated where it applies):

* Eq. (2) sums over samples; here it is **averaged** over the batch, so ``lambda`` does not
  scale with the batch size (as in the Mean Teacher and SRC-MT reference code).
* ``f`` in Eq. (2) is the **probability** vector: softmax for single-label tasks, per-class
  sigmoid for multi-label ones.
* The graph of Eq. (5) is made undirected by keeping an edge ``{i, j}`` only when
  ``A_ij = A_ji = 1`` (``R`` is not symmetric after row normalisation); self-loops are ignored.
* A "sub-structure connected at t and t + 1" is read as a **connected component with at
  least two samples of the graph whose edges exist at both times** (``A_{t-1} AND A_t``):
  each such component is connected in both graphs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor

__all__ = [
    "binarize_relation",
    "class_probabilities",
    "individual_consistency",
    "relation_matrix",
    "sigmoid_rampup",
    "spatial_structure_consistency",
    "stable_substructures",
    "supervised_loss",
    "temporal_substructure_consistency",
]


def class_probabilities(logits: Tensor, multi_label: bool) -> Tensor:
    """Softmax over classes (single-label) or per-class sigmoid (multi-label); ``(B, K)``."""
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)


def supervised_loss(logits: Tensor, labels: Tensor, multi_label: bool) -> Tensor:
    """``L_s`` of Eq. (1) and (7): cross-entropy (single-label) or binary cross-entropy averaged
    over classes (multi-label).

    Args:
        logits: ``(B, K)``.
        labels: ``(B, K)`` one-hot (single-label) or 0/1 (multi-label).
    """
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ")
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels.argmax(dim=1))


def individual_consistency(
    student_logits: Tensor, teacher_logits: Tensor, multi_label: bool
) -> Tensor:
    """Eq. (2) of the STSC paper (Mean Teacher's consistency), averaged over the batch.

    ``mean_i ||p_teacher(x_i) - p_student(x_i)||_2^2`` with ``p`` the class probabilities
    (:func:`class_probabilities`); the teacher side is detached.

    Args:
        student_logits: ``(B, K)``, under perturbation ``eta``.
        teacher_logits: ``(B, K)``, under a different perturbation ``eta'``.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} differ"
        )
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    p_s = class_probabilities(student_logits, multi_label)
    p_t = class_probabilities(teacher_logits.detach(), multi_label)
    return ((p_s - p_t) ** 2).sum(dim=1).mean()


def relation_matrix(features: Tensor, eps: float = 1e-12) -> Tensor:
    """Eq. (3) of the STSC paper: the row-L2-normalised case-level Gram matrix.

    ``D`` is ``features`` flattened to ``(B, HWC)`` (pooled features ``(B, C)`` stay as they
    are); ``M = D D^T`` (``M_ij = <D_i, D_j>``) and ``R_i = M_i / ||M_i||_2``.

    Args:
        features: ``Tensor[B, ...]``.
        eps: floor of the row norm (an all-zero row stays zero).

    Returns:
        ``R``, ``Tensor[B, B]`` (not symmetric in general).
    """
    d = features.reshape(features.shape[0], -1)  # (B, HWC)
    m = d @ d.t()  # (B, B)
    return m / m.norm(p=2, dim=1, keepdim=True).clamp_min(eps)


def spatial_structure_consistency(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """Eq. (4) of the STSC paper (SRC-MT's relation consistency).

    ``(1/B) ||R(X; theta, eta) - R(X; theta', eta')||_F^2``; the teacher side is detached.

    Args:
        student_features: ``(B, ...)`` student features of the batch.
        teacher_features: ``(B, ...)`` teacher features of the same images (other perturbation).
    """
    if student_features.shape != teacher_features.shape:
        raise ValueError(
            f"student {tuple(student_features.shape)} and teacher {tuple(teacher_features.shape)} "
            "features differ"
        )
    b = student_features.shape[0]
    if b == 0:
        return student_features.sum() * 0.0
    r_s = relation_matrix(student_features)
    r_t = relation_matrix(teacher_features.detach())
    return ((r_s - r_t) ** 2).sum() / b


def binarize_relation(relation: Tensor, tau: float) -> Tensor:
    """Eq. (5) of the STSC paper: ``A_ij = 1`` if ``R_ij >= tau`` else 0 (a bool ``(B, B)``)."""
    return relation.detach() >= tau


def stable_substructures(adj_prev: Tensor, adj_curr: Tensor, min_size: int = 2) -> list[Tensor]:
    """The stable sub-structures ``S = {s_i}`` of Sec. 2.3 (module docstring for the reading).

    Args:
        adj_prev: ``A_{t-1}``, bool ``(B, B)`` (Eq. (5) at the previous time).
        adj_curr: ``A_t``, bool ``(B, B)`` for the same samples, in the same order.
        min_size: smallest sub-structure kept (a lone sample has no relation to keep).

    Returns:
        One ``LongTensor`` of sample positions per sub-structure, each sorted, ordered by
        their smallest position.
    """
    if (
        adj_prev.shape != adj_curr.shape
        or adj_prev.ndim != 2
        or adj_prev.shape[0] != adj_prev.shape[1]
    ):
        raise ValueError(
            f"adjacency matrices must be square and equal in shape, got "
            f"{tuple(adj_prev.shape)} and {tuple(adj_curr.shape)}"
        )
    both = adj_prev.bool() & adj_curr.bool()
    both = both & both.t()  # undirected: mutual edges only
    both.fill_diagonal_(False)
    mat = both.cpu().numpy()
    n, comp = connected_components(csr_matrix(mat), directed=False)
    out = []
    for c in range(n):
        members = np.flatnonzero(comp == c)
        if members.size >= min_size:
            out.append(torch.as_tensor(members, dtype=torch.long))
    out.sort(key=lambda t: int(t[0]))
    return out


def temporal_substructure_consistency(
    relation_curr: Tensor,
    relation_prev: Tensor,
    substructures: list[Tensor],
    batch_size: int | None = None,
) -> Tensor:
    """Eq. (6) of the STSC paper: ``sum_i (1/B) ||R_t[s_i, s_i] - R_{t-1}[s_i, s_i]||_F^2``.

    Args:
        relation_curr: ``R_t`` ``(B, B)`` (student, with gradients).
        relation_prev: ``R_{t-1}`` ``(B, B)`` of the same samples at the previous time
            (detached: the past is a target).
        substructures: from :func:`stable_substructures`.
        batch_size: ``B`` of the ``1/B`` factor (default ``relation_curr.shape[0]``).
    """
    if relation_curr.shape != relation_prev.shape:
        raise ValueError(
            f"relation matrices differ in shape: {tuple(relation_curr.shape)} vs "
            f"{tuple(relation_prev.shape)}"
        )
    b = int(batch_size or relation_curr.shape[0])
    total = relation_curr.sum() * 0.0
    prev = relation_prev.detach()
    for s in substructures:
        s = s.to(relation_curr.device)
        diff = relation_curr[s][:, s] - prev[s][:, s]  # (|s|, |s|)
        total = total + (diff**2).sum() / max(b, 1)
    return total


def sigmoid_rampup(step: int, rampup_iters: int) -> float:
    """Mean Teacher's ramp of ``lambda``: ``exp(-5 (1 - t)^2)`` with ``t = min(step / rampup_iters, 1)``.

    ``e^-5 = 0.0067`` at step 0, 1 from ``rampup_iters`` on (1 at once when ``rampup_iters <= 0``).
    """
    if rampup_iters <= 0:
        return 1.0
    t = min(max(float(step), 0.0) / rampup_iters, 1.0)
    return float(np.exp(-5.0 * (1.0 - t) ** 2))
