"""Classification metrics: AUC (per class, macro), accuracy, sensitivity, specificity, F1.

Implemented here (NumPy/SciPy only) and tested equal to scikit-learn on the same inputs:

* ``AUC/<class>``: one-vs-rest ROC AUC of each class's probability — the Mann-Whitney
  statistic with average ranks for ties, equal to ``sklearn.metrics.roc_auc_score``. NaN for a
  class with no positive or no negative example; ``AUC`` is the mean over the defined classes
  (``roc_auc_score(..., average="macro")`` when all are defined). For a two-class softmax
  task both one-vs-rest AUCs are the binary AUC.
* Single-label predictions are the argmax class; multi-label ones ``p_k >= threshold``.
* ``accuracy``: top-1 accuracy (single-label) or exact-match/subset accuracy (multi-label),
  i.e. ``sklearn.metrics.accuracy_score``. ``accuracy_ovr``: the mean of the per-class
  one-vs-rest binary accuracies — the "Acc" of SRC-MT's and STSC's tables (their 7-class ISIC
  accuracies of 92-95% are of this kind).
* Two-class single-label tasks (class 1 positive, e.g. pneumonia): ``sensitivity`` = recall of
  class 1, ``specificity`` = recall of class 0, ``F1`` = F1 of class 1 (scikit-learn's binary
  average).
* More classes or multi-label: macro averages over classes of one-vs-rest recall
  (``sensitivity``), recall of the negatives (``specificity``) and ``F1`` (a class never
  predicted nor present counts 0, scikit-learn's ``zero_division=0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = ["binary_auc", "classification_metrics", "predict_labels"]


def binary_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the 0/1 labels ``y_true`` (NaN if only one class is present).

    ``AUC = (sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with average
    ranks for ties (Mann-Whitney U).
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def predict_labels(probs: np.ndarray, multi_label: bool, threshold: float = 0.5) -> np.ndarray:
    """0/1 predictions ``(N, K)``: argmax one-hot (single-label) or ``p >= threshold``."""
    p = np.asarray(probs, dtype=np.float64)
    if multi_label:
        return (p >= threshold).astype(np.int64)
    out = np.zeros(p.shape, dtype=np.int64)
    out[np.arange(p.shape[0]), p.argmax(axis=1)] = 1
    return out


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def classification_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    multi_label: bool,
    class_names: Sequence[str] | None = None,
    threshold: float = 0.5,
) -> dict[str, float]:
    """All metrics of the module docstring as a flat dict of floats.

    Args:
        labels: ``(N, K)`` one-hot (single-label) or 0/1 (multi-label) ground truth.
        probs: ``(N, K)`` class probabilities (softmax rows or per-class sigmoids).
        multi_label: task kind.
        class_names: names for the per-class keys (default ``"0".."K-1"``).
        threshold: multi-label decision threshold.

    Raises:
        ValueError: shapes differ or are not ``(N, K)`` with ``N >= 1``.
    """
    y = np.asarray(labels).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 2 or y.shape != p.shape or y.shape[0] == 0:
        raise ValueError(f"labels {y.shape} and probs {p.shape} must both be (N, K), N >= 1")
    k = y.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    pred = predict_labels(p, multi_label, threshold)
    out: dict[str, float] = {}
    aucs = [binary_auc(y[:, c], p[:, c]) for c in range(k)]
    defined = [a for a in aucs if not np.isnan(a)]
    out["AUC"] = float(np.mean(defined)) if defined else float("nan")
    tp = (pred & y).sum(axis=0).astype(np.float64)  # (K,)
    fp = (pred & (1 - y)).sum(axis=0).astype(np.float64)
    fn = ((1 - pred) & y).sum(axis=0).astype(np.float64)
    tn = ((1 - pred) & (1 - y)).sum(axis=0).astype(np.float64)
    sens = np.array([_ratio(tp[c], tp[c] + fn[c]) for c in range(k)])
    spec = np.array([_ratio(tn[c], tn[c] + fp[c]) for c in range(k)])
    f1 = np.array([_ratio(2 * tp[c], 2 * tp[c] + fp[c] + fn[c]) for c in range(k)])
    if multi_label:
        out["accuracy"] = float(np.mean((pred == y).all(axis=1)))
    else:
        out["accuracy"] = float(np.mean(pred.argmax(axis=1) == y.argmax(axis=1)))
    out["accuracy_ovr"] = float(np.mean((tp + tn) / y.shape[0]))
    if not multi_label and k == 2:
        out["sensitivity"], out["specificity"], out["F1"] = sens[1], sens[0], f1[1]
    else:
        out["sensitivity"] = float(sens.mean())
        out["specificity"] = float(spec.mean())
        out["F1"] = float(f1.mean())
    for c, name in enumerate(names):
        out[f"AUC/{name}"] = aucs[c]
    for c, name in enumerate(names):
        out[f"F1/{name}"] = float(f1[c])
    return {key: float(v) for key, v in out.items()}
