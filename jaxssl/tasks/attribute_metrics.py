"""Multi-label attribute metrics and category top-k: pure functions of numpy arrays (computed with numpy) or
jax arrays (with jax.numpy, so they also run inside a jitted loss).

Which F1 is which (``pred`` and ``true`` are 0/1 arrays [N samples, A attributes]):

* :func:`per_attribute_f1` [A]: for each attribute, 2TP / (2TP + FP + FN) over the samples.
* :func:`macro_f1`: the mean of the per-attribute F1s (every attribute counts the same, however rare).
* :func:`mean_sample_f1`: for each sample, the F1 of its predicted attribute set against its true set, then
  the mean over samples. This is the competition's "mean F1" (Kaggle's mean F-score); a model that gets the
  common attributes right scores high on it even when it never predicts the rare ones.
* :func:`micro_f1`: 2TP / (2TP + FP + FN) with the counts summed over every (sample, attribute) pair.

Empty cases (documented conventions):
* a sample with no true and no predicted attribute has F1 = 1 (it is exactly right; Kaggle's convention);
  a sample with true attributes and no predictions, or the reverse, has F1 = 0;
* an attribute with no positive sample and no prediction in the split has an undefined F1: NaN in
  :func:`per_attribute_f1`, and left out of :func:`macro_f1` (it says nothing about the model). If it is
  predicted somewhere, its F1 is 0.

Top-k recall as in the DeepFashion paper (Liu et al. 2016, "top-k recall rate" of attribute prediction):
:func:`topk_recall` is, for each attribute, the fraction of its positive samples whose k highest-scored
attributes include it, averaged over the attributes that have a positive sample; :func:`topk_recall_micro`
pools all (sample, true attribute) pairs instead. Neither needs a threshold.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

THRESHOLD_METRICS = ('mean_sample_f1', 'macro_f1', 'micro_f1')


def _xp(*arrays):
  """jax.numpy for jax arrays (inside the jitted loss), numpy otherwise: host-side reports on numpy arrays
  then cost no compilation per operation and shape."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _f32(xp, x):
  return xp.asarray(x, xp.float32)


def _nanmean(xp, x):
  with warnings.catch_warnings():  # numpy warns on an all-NaN mean; NaN is the documented answer
    warnings.simplefilter('ignore', RuntimeWarning)
    return xp.nanmean(x)


def f1_from_counts(tp, fp, fn, empty=np.nan):
  """2TP / (2TP + FP + FN), and ``empty`` where there are neither positives nor predictions."""
  xp = _xp(tp, fp, fn)
  denom = 2 * tp + fp + fn
  return xp.where(denom > 0, 2 * tp / xp.maximum(denom, 1e-12), empty)


def counts(pred, true, axis: int):
  """(TP, FP, FN) summed over ``axis`` (0: per attribute, 1: per sample)."""
  xp = _xp(pred, true)
  pred, true = _f32(xp, pred), _f32(xp, true)
  return (xp.sum(pred * true, axis), xp.sum(pred * (1 - true), axis), xp.sum((1 - pred) * true, axis))


def per_attribute_f1(pred, true):
  """[A]; NaN for an attribute with no positive and no prediction."""
  return f1_from_counts(*counts(pred, true, 0))


def macro_f1(pred, true):
  """Mean of the defined per-attribute F1s (NaN only if none is defined)."""
  return _nanmean(_xp(pred, true), per_attribute_f1(pred, true))


def per_sample_f1(pred, true):
  """[N]; 1 for a sample with no true and no predicted attribute."""
  return f1_from_counts(*counts(pred, true, 1), empty=1.0)


def mean_sample_f1(pred, true):
  """The competition's mean F1: the mean over samples of each sample's F1."""
  return _xp(pred, true).mean(per_sample_f1(pred, true))


def micro_f1(pred, true):
  xp = _xp(pred, true)
  tp, fp, fn = (xp.sum(c) for c in counts(pred, true, 0))
  return f1_from_counts(tp, fp, fn, empty=1.0)


def topk_mask(scores, k: int):
  """1 where an attribute is among its sample's k highest scores (ties: the lower index first, as
  ``jax.lax.top_k`` and a stable sort both break them)."""
  xp = _xp(scores)
  k = min(int(k), scores.shape[-1])
  if xp is jnp:
    idx = jax.lax.top_k(_f32(xp, scores), k)[1]
  else:
    idx = np.argsort(-_f32(xp, scores), axis=-1, kind='stable')[..., :k]
  return xp.sum(xp.eye(scores.shape[-1], dtype=xp.float32)[idx], axis=-2)


def topk_recall(scores, true, k: int):
  """DeepFashion's top-k recall, per attribute then averaged over attributes with a positive sample."""
  xp = _xp(scores, true)
  true = _f32(xp, true)
  hits, positives = xp.sum(topk_mask(scores, k) * true, 0), xp.sum(true, 0)
  return _nanmean(xp, xp.where(positives > 0, hits / xp.maximum(positives, 1), np.nan))


def topk_recall_micro(scores, true, k: int):
  """The fraction of all true (sample, attribute) pairs whose attribute is in the sample's top k."""
  xp = _xp(scores, true)
  true = _f32(xp, true)
  return xp.sum(topk_mask(scores, k) * true) / xp.maximum(xp.sum(true), 1)


def category_topk(logits, labels, k: int):
  """Fraction of samples whose label is among the k highest logits."""
  xp = _xp(logits, labels)
  onehot = xp.eye(logits.shape[-1], dtype=xp.float32)[xp.asarray(labels)]
  return xp.mean(xp.sum(topk_mask(logits, k) * onehot, -1))


# ---------------------------------------------------------------------------------------------- decisions


def threshold_decision(probs, thresholds):
  """1 where a probability reaches its threshold (a scalar, or one per attribute)."""
  xp = _xp(probs)
  return (_f32(xp, probs) >= _f32(xp, thresholds)).astype(xp.float32)


def group_argmax_decision(probs, groups):
  """Exactly one attribute per group: the most probable (for layouts whose groups are mutually exclusive)."""
  probs, groups = np.asarray(probs, np.float32), np.asarray(groups)
  out = np.zeros_like(probs)
  for g in np.unique(groups):
    members = np.flatnonzero(groups == g)
    out[np.arange(len(probs)), members[np.argmax(probs[:, members], axis=1)]] = 1.0
  return out


_SCORES = {'mean_sample_f1': mean_sample_f1, 'macro_f1': macro_f1, 'micro_f1': micro_f1}
DEFAULT_GRID = tuple(np.round(np.arange(0.02, 0.981, 0.01), 2).tolist())


def best_threshold(probs, true, metric: str = 'mean_sample_f1', grid=DEFAULT_GRID) -> tuple[float, float]:
  """The global threshold of ``grid`` maximizing ``metric`` (the smallest on ties), and that score."""
  if metric not in _SCORES:
    raise ValueError(f"unknown threshold metric '{metric}'; choose one of: {', '.join(THRESHOLD_METRICS)}")
  probs, true = np.asarray(probs, np.float32), np.asarray(true, np.float32)
  values = np.array([float(_SCORES[metric](threshold_decision(probs, t), true)) for t in grid])
  best = int(np.nanargmax(values))
  return float(grid[best]), float(values[best])


def best_attribute_thresholds(probs, true, fallback: float, grid=DEFAULT_GRID) -> np.ndarray:
  """One threshold per attribute maximizing its own F1; ``fallback`` for an attribute without a positive
  sample (nothing to tune on)."""
  probs, true = np.asarray(probs, np.float32), np.asarray(true, np.float32)
  table = np.stack([per_attribute_f1(threshold_decision(probs, t), true) for t in grid])    # [T, A]
  best = np.asarray(grid)[np.argmax(np.nan_to_num(table, nan=-1.0), axis=0)]
  return np.where(true.sum(0) > 0, best, fallback).astype(np.float32)
