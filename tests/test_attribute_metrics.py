"""Attribute F1s, top-k recall and threshold choice against cases worked out by hand."""

import math

import numpy as np
import pytest

from jaxssl.tasks import attribute_metrics as am

# 4 samples x 4 attributes. By sample: s0 TP1 FP1 -> 2/3; s1 TP2 -> 1; s2 nothing true, nothing predicted -> 1
# (convention); s3 TP0 FP2 FN1 -> 0. By attribute: a0 TP1 FP1 -> 2/3; a1 TP1 FP1 -> 2/3; a2 TP1 FN1 -> 2/3;
# a3 never true but predicted once -> 0.
PRED = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1]])
TRUE = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0]])


def test_which_f1_is_which():
  np.testing.assert_allclose(am.per_sample_f1(PRED, TRUE), [2 / 3, 1, 1, 0], rtol=1e-6)
  assert am.mean_sample_f1(PRED, TRUE) == pytest.approx(2 / 3)          # the competition's mean F1
  np.testing.assert_allclose(am.per_attribute_f1(PRED, TRUE), [2 / 3, 2 / 3, 2 / 3, 0], rtol=1e-6)
  assert am.macro_f1(PRED, TRUE) == pytest.approx(0.5)                  # (3 x 2/3 + 0) / 4
  assert am.micro_f1(PRED, TRUE) == pytest.approx(0.6)                  # TP3 FP3 FN1: 6 / 10


def test_empty_conventions():
  # An attribute nobody has and nobody predicts is undefined and left out of the macro mean.
  pred, true = PRED.copy(), TRUE.copy()
  pred[3, 3] = 0
  f1 = np.asarray(am.per_attribute_f1(pred, true))
  assert math.isnan(f1[3]) and am.macro_f1(pred, true) == pytest.approx(2 / 3)
  # A true attribute never predicted scores 0, for the attribute and for the sample.
  assert float(am.per_attribute_f1([[0], [0]], [[1], [0]])[0]) == 0.0
  np.testing.assert_array_equal(am.per_sample_f1([[0, 0]], [[1, 0]]), [0.0])
  # Nothing true and nothing predicted anywhere: every sample is right; no attribute F1 is defined.
  empty = np.zeros((3, 2))
  np.testing.assert_array_equal(am.per_sample_f1(empty, empty), [1, 1, 1])
  assert am.mean_sample_f1(empty, empty) == 1.0 and am.micro_f1(empty, empty) == 1.0
  assert math.isnan(float(am.macro_f1(empty, empty)))


def test_topk_recall_as_in_the_deepfashion_paper():
  scores = np.array([[0.9, 0.8, 0.1, 0.2], [0.1, 0.2, 0.3, 0.4], [0.5, 0.1, 0.9, 0.2]])
  true = np.array([[1, 0, 1, 0], [1, 0, 0, 1], [0, 0, 1, 0]])
  # Top 2: s0 {0, 1}, s1 {3, 2}, s2 {2, 0}. a0: 1 of 2 positives; a2: 1 of 2; a3: 1 of 1; a1 has no positive.
  assert am.topk_recall(scores, true, 2) == pytest.approx((0.5 + 0.5 + 1) / 3)
  assert am.topk_recall_micro(scores, true, 2) == pytest.approx(3 / 5)
  assert am.topk_recall(scores, true, 4) == 1.0


def test_category_topk():
  logits, labels = np.array([[3.0, 2, 1], [1, 3, 2]]), np.array([1, 1])
  assert am.category_topk(logits, labels, 1) == 0.5 and am.category_topk(logits, labels, 2) == 1.0


def test_thresholds_and_decisions():
  probs, true = np.array([[0.9, 0.3], [0.2, 0.6]]), np.array([[1, 0], [0, 1]])
  t, best = am.best_threshold(probs, true, 'mean_sample_f1')
  assert t == pytest.approx(0.31) and best == 1.0                      # the smallest perfect threshold
  assert am.best_threshold(probs, true, 'macro_f1')[0] == pytest.approx(0.31)
  with pytest.raises(ValueError, match="unknown threshold metric 'f2'"):
    am.best_threshold(probs, true, 'f2')
  probs3 = np.array([[0.9, 0.2, 0.7], [0.4, 0.25, 0.1]])
  per = am.best_attribute_thresholds(probs3, np.array([[1, 0, 0], [0, 1, 0]]), fallback=0.5)
  np.testing.assert_allclose(per, [0.41, 0.21, 0.5], atol=1e-6)        # a2 has no positive: the fallback
  np.testing.assert_array_equal(am.threshold_decision(probs3, per), [[1, 0, 1], [0, 1, 0]])
  groups = [1, 1, 2, 2, 2]
  probs5 = np.array([[0.1, 0.2, 0.9, 0.8, 0.1], [0.6, 0.5, 0.1, 0.2, 0.3]])
  np.testing.assert_array_equal(am.group_argmax_decision(probs5, groups), [[0, 1, 1, 0, 0], [1, 0, 0, 0, 1]])


def test_numpy_and_jax_arrays_give_the_same_values():
  """Host reports run on numpy; the training loss runs the same functions on jax arrays under jit."""
  import jax  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  scores = rng.random((50, 7)).astype(np.float32)
  true = (rng.random((50, 7)) < 0.3).astype(np.float32)
  true[:, 6] = 0                                         # one attribute without positives
  pred = (scores > 0.6).astype(np.float32)
  for fn in (am.mean_sample_f1, am.macro_f1, am.micro_f1):
    assert float(jax.jit(fn)(pred, true)) == pytest.approx(float(fn(pred, true)), rel=1e-6)
  for k in (1, 3):
    assert float(jax.jit(am.topk_recall, static_argnums=2)(scores, true, k)) == pytest.approx(
        float(am.topk_recall(scores, true, k)), rel=1e-6)
