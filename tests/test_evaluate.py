"""Per-AU metrics against hand-worked counts, and the result tables."""

import numpy as np
import pytest

from audjax.evaluate import au_metrics, format_markdown, format_table, landmark_metrics


def test_au_metrics_hand_worked_with_unknown_labels():
    # AU "a": TP 1 (.9/1), FN 1 (.2/1), FP 1 (.7/0), the 999 row dropped -> F1 2/(2+1+1) = 50,
    # accuracy 1/3. AU "b": all four labelled, TP 2, TN 2 -> F1 100, accuracy 100.
    probs = np.array([[.9, .8], [.2, .6], [.7, .1], [.99, .3]])
    labels = np.array([[1, 1], [1, 1], [0, 0], [999, 0]])
    r = au_metrics(probs, labels, ("a", "b"))
    assert r["f1"] == pytest.approx({"a": 50.0, "b": 100.0})
    assert r["acc"] == pytest.approx({"a": 100 / 3, "b": 100.0})
    assert r["positive_rate"] == pytest.approx({"a": 200 / 3, "b": 50.0})
    assert r["count"] == {"a": 3, "b": 4}
    assert r["mean_f1"] == pytest.approx(75.0)
    assert r["mean_acc"] == pytest.approx((100 / 3 + 100) / 2)


def test_threshold_is_inclusive_and_no_positive_gives_zero_f1():
    r = au_metrics(np.array([[0.5], [0.4]]), np.array([[0], [0]]), ("a",))
    assert r["f1"]["a"] == 0.0 and r["acc"]["a"] == 50.0  # 0.5 counts as "present"


def test_landmark_metrics():
    target = np.zeros((2, 49, 2), np.float32)
    target[:, 25:31, 0] = 10.0  # eyes 10 px apart
    pred = target.copy()
    pred[1] += np.array([6.0, 8.0])  # off by 10 px: NME 1.0, a failure
    r = landmark_metrics(pred, target)
    assert r["nme"] == pytest.approx(50.0) and r["failure_rate"] == pytest.approx(50.0)


def test_tables():
    r = au_metrics(np.array([[.9, .8]]), np.array([[1, 0]]), ("AU1", "AU2"))
    text = format_table("target_test", r, ("AU1", "AU2"))
    assert text.splitlines()[0].split() == ["target_test", "AU1", "AU2", "Avg."]
    assert text.splitlines()[1].split() == ["F1", "100.0", "0.0", "50.0"]
    md = format_markdown({"target_test": r}, ("AU1", "AU2"))
    assert "| F1 | 100.0 | 0.0 | 50.0 |" in md
