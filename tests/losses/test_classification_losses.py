"""Eq. (2)-(6) of the STSC paper against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssmd.losses.classification import (
    binarize_relation,
    individual_consistency,
    relation_matrix,
    sigmoid_rampup,
    spatial_structure_consistency,
    stable_substructures,
    supervised_loss,
    temporal_substructure_consistency,
)


def test_relation_matrix_hand_computed() -> None:
    d = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    # M = D D^T = [[1, 1, 0], [1, 2, 2], [0, 2, 4]]; row norms sqrt(2), 3, sqrt(20)
    r2, r20 = math.sqrt(2), math.sqrt(20)
    expected = torch.tensor([[1 / r2, 1 / r2, 0.0], [1 / 3, 2 / 3, 2 / 3], [0.0, 2 / r20, 4 / r20]])
    r = relation_matrix(d)
    assert torch.allclose(r, expected, atol=1e-6)
    assert torch.allclose(r.norm(dim=1), torch.ones(3), atol=1e-6)


def test_relation_matrix_flattens_feature_maps() -> None:
    f = torch.randn(4, 3, 2, 2)
    assert torch.allclose(relation_matrix(f), relation_matrix(f.reshape(4, -1)))


def test_relation_matrix_zero_row_stays_zero() -> None:
    r = relation_matrix(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    assert torch.equal(r[0], torch.zeros(2))
    assert torch.isfinite(r).all()


def test_spatial_consistency_zero_for_identical_features() -> None:
    f = torch.randn(6, 5)
    assert float(spatial_structure_consistency(f, f.clone())) == pytest.approx(0.0, abs=1e-10)


def test_spatial_consistency_hand_value_and_positive() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # R = I
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # R = all 1/sqrt(2)
    expected = (2 * (1 - 1 / math.sqrt(2)) ** 2 + 2 * 0.5) / 2
    assert float(spatial_structure_consistency(s, t)) == pytest.approx(expected, rel=1e-6)
    assert float(spatial_structure_consistency(torch.randn(4, 3), torch.randn(4, 3))) > 0


def test_spatial_consistency_gradient_reaches_student_only() -> None:
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    spatial_structure_consistency(s, t).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
    assert t.grad is None


def test_spatial_consistency_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="differ"):
        spatial_structure_consistency(torch.randn(4, 3), torch.randn(3, 3))


def test_individual_consistency_hand_values() -> None:
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])  # softmax (0.75, 0.25)
    assert float(individual_consistency(s, t, multi_label=False)) == pytest.approx(0.125)
    # multi-label: per-class sigmoid 0.5 vs 0.75
    s1, t1 = torch.tensor([[0.0]]), torch.tensor([[math.log(3.0)]])
    assert float(individual_consistency(s1, t1, multi_label=True)) == pytest.approx(0.0625)
    # averaged over the batch
    both = individual_consistency(torch.cat([s, s]), torch.cat([t, s]), multi_label=False)
    assert float(both) == pytest.approx(0.0625)


def test_individual_consistency_teacher_detached() -> None:
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    individual_consistency(s, t, False).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
    assert t.grad is None


def test_empty_batches_give_zero() -> None:
    empty = torch.zeros(0, 3)
    assert float(individual_consistency(empty, empty, False)) == 0.0
    assert float(spatial_structure_consistency(empty, empty)) == 0.0
    assert float(supervised_loss(empty, empty, False)) == 0.0


def test_supervised_loss_matches_torch() -> None:
    logits = torch.randn(5, 3)
    onehot = F.one_hot(torch.tensor([0, 2, 1, 1, 0]), 3).float()
    assert torch.allclose(
        supervised_loss(logits, onehot, False), F.cross_entropy(logits, onehot.argmax(1))
    )
    multi = torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 0]])
    assert torch.allclose(
        supervised_loss(logits, multi, True), F.binary_cross_entropy_with_logits(logits, multi)
    )


def test_binarize_relation_includes_threshold() -> None:
    r = torch.tensor([[0.5, 0.49], [0.51, 0.2]])
    assert binarize_relation(r, 0.5).tolist() == [[True, False], [True, False]]


def _adj(n: int, edges: list[tuple[int, int]]) -> torch.Tensor:
    a = torch.zeros(n, n, dtype=torch.bool)
    for i, j in edges:
        a[i, j] = a[j, i] = True
    return a


def test_stable_substructures_hand_made_graphs() -> None:
    prev = _adj(6, [(0, 1), (1, 2), (3, 4)])
    curr = _adj(6, [(0, 1), (1, 2), (2, 3), (4, 5)])
    subs = stable_substructures(prev, curr)
    # only 0-1-2 is connected at both times; 3-4 (prev only), 2-3 and 4-5 (curr only) are not
    assert [s.tolist() for s in subs] == [[0, 1, 2]]


def test_stable_substructures_two_components_and_one_way_edges() -> None:
    prev = _adj(6, [(0, 1), (3, 4), (4, 5)])
    curr = _adj(6, [(0, 1), (3, 4), (4, 5), (1, 2)])
    assert [s.tolist() for s in stable_substructures(prev, curr)] == [[0, 1], [3, 4, 5]]
    one_way = torch.zeros(3, 3, dtype=torch.bool)
    one_way[0, 1] = True  # A_01 = 1 but A_10 = 0: not an undirected edge
    assert stable_substructures(one_way, one_way) == []
    diag = torch.eye(3, dtype=torch.bool)  # self-loops are not relations
    assert stable_substructures(diag, diag) == []


def test_temporal_consistency_hand_value() -> None:
    r_curr = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.3, 1.0]])
    r_prev = torch.tensor([[0.9, 0.7, 0.4], [0.4, 1.0, 0.1], [0.1, 0.1, 0.1]])
    subs = [torch.tensor([0, 1])]
    # block [[1, .5], [.5, 1]] - [[.9, .7], [.4, 1]] -> .01 + .04 + .01 + 0 = .06, / B = 3
    loss = temporal_substructure_consistency(r_curr, r_prev, subs)
    assert float(loss) == pytest.approx(0.06 / 3)
    both = temporal_substructure_consistency(r_curr, r_prev, [*subs, torch.tensor([1, 2])], 10)
    # second block [[1, .2], [.3, 1]] - [[1, .1], [.1, .1]] -> .01 + .04 + .81
    assert float(both) == pytest.approx((0.06 + 0.86) / 10)
    assert float(temporal_substructure_consistency(r_curr, r_prev, [])) == 0.0


def test_temporal_consistency_gradient_to_current_only() -> None:
    cur = torch.rand(3, 3, requires_grad=True)
    prev = torch.rand(3, 3, requires_grad=True)
    temporal_substructure_consistency(cur, prev, [torch.tensor([0, 2])]).backward()
    assert cur.grad is not None and float(cur.grad.abs().sum()) > 0
    assert float(cur.grad[1].abs().sum()) == 0.0  # sample 1 is in no sub-structure
    assert prev.grad is None


def test_sigmoid_rampup() -> None:
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(100, 100) == 1.0
    assert sigmoid_rampup(500, 100) == 1.0
    assert sigmoid_rampup(0, 0) == 1.0
