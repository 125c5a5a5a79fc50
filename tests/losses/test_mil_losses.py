"""MIL loss and the four mass-of-interest rules against hand-computed region scores."""

from __future__ import annotations

import math
import re

import pytest
import torch

from ssmd.losses.mil import MOI_RULES, mass_of_interest, mil_loss

# three regions x (normal/background, benign, malignant)
P = torch.tensor(
    [
        [0.70, 0.20, 0.10],  # mostly normal
        [0.20, 0.50, 0.30],  # most benign; most discriminative (0.5); least normal (0.2)
        [0.30, 0.05, 0.65],  # most malignant
    ]
)
RULES = {0: "most_abnormal", 1: "most_malignant", 2: "most_malignant"}


@pytest.mark.parametrize(
    ("rule", "index"),
    [
        ("most_benign", 1),  # argmax p_B = 0.5
        ("most_malignant", 2),  # argmax p_M = 0.65
        ("most_discriminative", 2),  # max over B, M per region: 0.2, 0.5, 0.65
        ("most_abnormal", 1),  # argmin p_N = 0.2
    ],
)
def test_each_moi_rule_by_hand(rule: str, index: int) -> None:
    assert mass_of_interest(P, rule) == index


def test_ties_keep_the_first_region_and_bad_input_is_named() -> None:
    tied = torch.tensor([[0.2, 0.4, 0.4], [0.2, 0.4, 0.4]])
    assert all(mass_of_interest(tied, r) == 0 for r in MOI_RULES)
    with pytest.raises(ValueError, match="unknown mass-of-interest rule 'biggest'"):
        mass_of_interest(P, "biggest")
    with pytest.raises(ValueError, match="P >= 1"):
        mass_of_interest(torch.zeros(0, 3), "most_malignant")


def test_mil_loss_is_minus_log_p_of_the_label_at_the_moi() -> None:
    logits = [P.log(), P.log()]
    # image A labelled benign, proposed rule most_malignant: region 2, -log p_B = -log 0.05
    # image B labelled normal: least-normal region 1, -log p_N = -log 0.2
    loss, stats = mil_loss(logits, [1, 0], RULES)
    expect = (-math.log(0.05) - math.log(0.2)) / 2
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    assert stats["images"] == 2.0
    assert stats["p_label"] == pytest.approx((0.05 + 0.2) / 2, rel=1e-5)
    # region 2 is most likely malignant (not benign), region 1 most likely benign (not normal)
    assert stats["moi_correct"] == 0.0
    # with the ablation rule "most benign" for B images the MoI is region 1: -log 0.5
    loss_b, stats_b = mil_loss([P.log()], [1], {**RULES, 1: "most_benign"})
    assert loss_b.item() == pytest.approx(-math.log(0.5), rel=1e-5)
    assert stats_b["moi_correct"] == 1.0


def test_mil_loss_is_zero_for_a_confident_correct_moi_and_has_gradients() -> None:
    logits = torch.tensor([[-30.0, -30.0, 30.0], [0.0, 0.0, 0.0]], requires_grad=True)
    loss, stats = mil_loss([logits], [2], RULES)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert stats["moi_correct"] == 1.0
    loss_wrong, _ = mil_loss([logits], [1], RULES)  # benign label, MoI still region 0
    (grad,) = torch.autograd.grad(loss_wrong, logits)
    assert float(grad[0].abs().sum()) > 0 and float(grad[1].abs().sum()) == 0.0


def test_images_without_regions_are_counted_and_labels_checked() -> None:
    loss, stats = mil_loss([torch.zeros(0, 3), P.log()], [1, 2], RULES)
    assert stats == {
        "images": 1.0,
        "no_region": 1.0,
        "moi_correct": 1.0,
        "p_label": pytest.approx(0.65, rel=1e-5),
    }
    assert loss.item() == pytest.approx(-math.log(0.65), rel=1e-5)
    with pytest.raises(
        ValueError, match=re.escape("image 0: image label 3 is not a region class 0..2")
    ):
        mil_loss([P.log()], [3], RULES)
    with pytest.raises(ValueError, match="no mass-of-interest rule for image label 1"):
        mil_loss([P.log()], [1], {0: "most_abnormal"})
