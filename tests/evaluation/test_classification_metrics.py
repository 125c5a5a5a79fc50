"""Classification metrics equal scikit-learn's on the same inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

sk = pytest.importorskip("sklearn.metrics")

from ssmd.evaluation.classification import binary_auc, classification_metrics  # noqa: E402


def test_binary_auc_hand_value_with_ties() -> None:
    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4, 0.8>0.1, 0.4=0.4 -> 1/2, 0.4>0.1)
    assert binary_auc(np.array([1, 1, 0, 0]), np.array([0.8, 0.4, 0.4, 0.1])) == 3.5 / 4
    assert math.isnan(binary_auc(np.array([1, 1]), np.array([0.2, 0.3])))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_single_label_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 2, 300)
    p1 = np.clip(0.3 * c + rng.random(300) * 0.7, 0, 1).round(2)  # ties on purpose
    probs = np.stack([1 - p1, p1], 1)
    m = classification_metrics(np.eye(2)[c], probs, multi_label=False)
    pred = probs.argmax(1)
    assert m["AUC"] == pytest.approx(sk.roc_auc_score(c, p1), abs=1e-12)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(c, pred))
    assert m["sensitivity"] == pytest.approx(sk.recall_score(c, pred))
    assert m["specificity"] == pytest.approx(sk.recall_score(1 - c, 1 - pred))
    assert m["F1"] == pytest.approx(sk.f1_score(c, pred))


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k, n = 7, 400
    c = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[c]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.eye(k)[c]
    m = classification_metrics(y, probs, multi_label=False, class_names=[f"c{i}" for i in range(k)])
    pred = probs.argmax(1)
    assert m["AUC"] == pytest.approx(sk.roc_auc_score(y, probs, average="macro"), abs=1e-12)
    per_class = sk.roc_auc_score(y, probs, average=None)
    for i in range(k):
        assert m[f"AUC/c{i}"] == pytest.approx(per_class[i], abs=1e-12)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(c, pred))
    assert m["sensitivity"] == pytest.approx(sk.recall_score(c, pred, average="macro"))
    assert m["F1"] == pytest.approx(sk.f1_score(c, pred, average="macro", zero_division=0))
    spec = np.mean(
        [sk.recall_score(c != i, pred != i) for i in range(k)]
    )  # one-vs-rest recall of the negatives
    assert m["specificity"] == pytest.approx(spec)
    ovr = np.mean([sk.accuracy_score(c == i, pred == i) for i in range(k)])
    assert m["accuracy_ovr"] == pytest.approx(ovr)


def test_multilabel_equals_sklearn() -> None:
    rng = np.random.default_rng(3)
    n, k = 300, 5
    y = (rng.random((n, k)) < 0.3).astype(int)
    probs = np.clip(0.35 * y + rng.random((n, k)) * 0.65, 0, 1)
    m = classification_metrics(y, probs, multi_label=True)
    pred = (probs >= 0.5).astype(int)
    assert m["AUC"] == pytest.approx(sk.roc_auc_score(y, probs, average="macro"), abs=1e-12)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert m["accuracy_ovr"] == pytest.approx(1 - sk.hamming_loss(y, pred))
    assert m["sensitivity"] == pytest.approx(sk.recall_score(y, pred, average="macro"))
    assert m["specificity"] == pytest.approx(
        sk.recall_score(1 - y, 1 - pred, average="macro", zero_division=0)
    )
    assert m["F1"] == pytest.approx(sk.f1_score(y, pred, average="macro", zero_division=0))


def test_undefined_class_auc_is_nan_and_left_out_of_the_macro() -> None:
    y = np.array([[1, 0], [0, 0], [1, 0]])
    probs = np.array([[0.9, 0.1], [0.2, 0.3], [0.6, 0.8]])
    m = classification_metrics(y, probs, multi_label=True)
    assert math.isnan(m["AUC/1"])
    assert m["AUC"] == pytest.approx(sk.roc_auc_score(y[:, 0], probs[:, 0]))


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="must both be"):
        classification_metrics(np.zeros((3, 2)), np.zeros((3, 3)), multi_label=False)
