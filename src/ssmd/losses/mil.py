"""Multiple-instance learning over image labels: the "mass of interest" and ``L_ws``.

Shin et al., "Joint Weakly and Semi-Supervised Deep Learning for Localization and
Classification of Masses in Breast Ultrasound Images" (IEEE TMI 2019), Sec. "Weakly
supervised learning using the DX subset". An image ``I`` with image label ``l* in L =
{N, B, M}`` and regions ``R(I)`` (the RPN's proposals) is a bag; its image-level class
distribution is that of one region, the mass of interest (MoI)::

    P_l(I) = p_l(x_MoI)   for all l in L
    L_ws(I) = - sum_{l in L} P*_l(I) log P_l(I)

(the slides number no equation; these are their two MIL formulas, implemented once here)

with ``P*`` the one-hot image label, so ``L_ws(I) = -log p_{l*}(x_MoI)``.

**Region classes.** ``p(x)`` is the RoI head's softmax over ``K + 1`` classes, class 0 the
background. "Normal" is the background class: a normal image holds no mass, so every region
of it, and the background regions of an abnormal image, are what class 0 means; the paper's
``L = {N, B, M}`` is exactly the detector's ``{background, benign, malignant}`` and no extra
output is needed (an extra "normal" class beside background would have no region of its own
to learn from in the strong images). The image label is the region-class index
(:meth:`ssmd.data.datasets.base.DetectionDataset.image_class`: normal 0, benign 1,
malignant 2).

**MoI rules** (the slides' four definitions; class ``1`` is benign, class ``K`` the last,
malignant for BUSI's ``K = 2``):

* ``most_benign``: ``argmax_x p_B(x)``;
* ``most_malignant``: ``argmax_x p_M(x)``;
* ``most_discriminative``: ``argmax_x max_{l in {B, M}} p_l(x)`` (any foreground class);
* ``most_abnormal``: ``argmin_x p_N(x)`` (the least-normal region).

The rule is chosen per image label (:func:`mass_of_interest`): Table II's rows pair a rule
for images labelled B with ``most_malignant`` for those labelled M; the proposed method uses
``most_malignant`` for both, and normal images use the least-normal region, as the slides
write (``argmin p_N``) — the region most likely to be a false mass is pushed to background.
Ties keep the first region (``torch.argmax`` / ``argmin``). The selection carries no
gradient; the loss does, through ``p_{l*}`` of the chosen region.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MOI_RULES", "MoIRule", "mass_of_interest", "mil_loss"]

MoIRule = Literal["most_benign", "most_malignant", "most_discriminative", "most_abnormal"]
MOI_RULES: tuple[str, ...] = (
    "most_benign",
    "most_malignant",
    "most_discriminative",
    "most_abnormal",
)


def mass_of_interest(probs: Tensor, rule: str) -> int:
    """Index of the mass of interest among an image's regions (module docstring).

    Args:
        probs: ``Tensor[P, K + 1]`` region class probabilities (class 0 background =
            normal), ``P >= 1``, ``K >= 1``.
        rule: one of :data:`MOI_RULES`.

    Raises:
        ValueError: an unknown rule, no region, or fewer than two classes.
    """
    if probs.ndim != 2 or probs.shape[0] < 1 or probs.shape[1] < 2:
        raise ValueError(
            f"mass_of_interest needs probabilities (P >= 1, K + 1 >= 2), got {tuple(probs.shape)}"
        )
    p = probs.detach()
    if rule == "most_benign":
        return int(torch.argmax(p[:, 1]))
    if rule == "most_malignant":
        return int(torch.argmax(p[:, -1]))
    if rule == "most_discriminative":
        return int(torch.argmax(p[:, 1:].max(dim=1).values))
    if rule == "most_abnormal":
        return int(torch.argmin(p[:, 0]))
    raise ValueError(f"unknown mass-of-interest rule {rule!r}; known: {', '.join(MOI_RULES)}")


def mil_loss(
    logits: Sequence[Tensor], image_labels: Sequence[int], rules: Mapping[int, str]
) -> tuple[Tensor, dict[str, float]]:
    """Mean ``L_ws`` (module docstring) over the images of a weak batch.

    Args:
        logits: per image ``Tensor[P_i, K + 1]`` RoI class logits over its regions.
        image_labels: per image its label as a region class (0 normal, 1..K).
        rules: image label -> MoI rule (:data:`MOI_RULES`); every label present needs one.

    Returns:
        ``(loss, stats)``: the mean over images with at least one region (0 with a graph
        when none has any), and ``{"images", "no_region", "moi_correct", "p_label"}``: images
        counted, images skipped for having no region, the fraction whose MoI's most likely
        class is the image label, and the mean ``P_{l*}(I)``.

    Raises:
        ValueError: lengths differ, a label outside ``0..K`` or without a rule.
    """
    if len(logits) != len(image_labels):
        raise ValueError(f"got logits for {len(logits)} images and {len(image_labels)} labels")
    terms: list[Tensor] = []
    correct = 0
    p_label = 0.0
    empty = 0
    for i, (lg, lab) in enumerate(zip(logits, image_labels, strict=True)):
        k1 = int(lg.shape[-1])
        if not 0 <= int(lab) < k1:
            raise ValueError(f"image {i}: image label {lab} is not a region class 0..{k1 - 1}")
        if int(lab) not in rules:
            raise ValueError(f"image {i}: no mass-of-interest rule for image label {lab}")
        if lg.shape[0] == 0:
            empty += 1
            continue
        log_p = F.log_softmax(lg, dim=-1)  # (P, K+1)
        j = mass_of_interest(log_p.exp(), rules[int(lab)])
        terms.append(-log_p[j, int(lab)])  # -sum_l P*_l log P_l(I) with one-hot P*
        correct += int(torch.argmax(log_p[j].detach())) == int(lab)
        p_label += float(log_p[j, int(lab)].detach().exp())
    n = len(terms)
    if n == 0:
        ref = logits[0] if logits else torch.zeros(1)
        loss = ref.sum() * 0.0
    else:
        loss = torch.stack(terms).mean()
    stats = {
        "images": float(n),
        "no_region": float(empty),
        "moi_correct": correct / n if n else 0.0,
        "p_label": p_label / n if n else 0.0,
    }
    return loss, stats
