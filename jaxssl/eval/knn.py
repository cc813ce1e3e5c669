"""Weighted k-nearest-neighbour probe of a backbone (``--mode=knn``): no training, so it measures only what the
features already separate.

Protocol of Wu et al. 2018 ("Unsupervised feature learning via non-parametric instance discrimination"): the
features of one layer, L2-normalized; each eval image's k most cosine-similar train images vote for their
label with weight exp(similarity / T); k=200, T=0.07.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl.eval import features as features_lib
from jaxssl.eval.base import Evaluator
from jaxssl.eval.features import check_feature
from jaxssl.tasks.base import POOLS


@functools.partial(jax.jit, static_argnames=('k', 'num_classes'))
def _chunk_scores(train_feats, train_labels, test_feats, *, k: int, temperature: float, num_classes: int):
  sims = test_feats @ train_feats.T                              # [n, N]: cosine for unit vectors
  top_sims, top_idx = jax.lax.top_k(sims, k)                     # [n, k]
  votes = jax.nn.one_hot(train_labels[top_idx], num_classes)     # [n, k, C]
  return jnp.einsum('nk,nkc->nc', jnp.exp(top_sims / temperature), votes)


def knn_predict(train_feats, train_labels, test_feats, k: int = 200, temperature: float = 0.07,
                num_classes: int | None = None, chunk: int = 256) -> np.ndarray:
  """Class scores [num_test, num_classes]: the sum of exp(sim / T) over each test row's k nearest train rows
  with that label. Features are used as given (normalize them for cosine). The similarity matrix is made
  ``chunk`` test rows at a time: 60k train x 10k test would be 2.4 GB at once."""
  train_feats = jnp.asarray(train_feats, jnp.float32)
  train_labels = jnp.asarray(train_labels, jnp.int32)
  test_feats = np.asarray(test_feats, np.float32)
  num_classes = int(num_classes or int(np.max(train_labels)) + 1)
  k = min(int(k), train_feats.shape[0])
  out = []
  for start in range(0, len(test_feats), chunk):
    rows = test_feats[start:start + chunk]
    n = len(rows)
    if n < chunk:  # one compiled shape for every chunk
      rows = np.concatenate([rows, np.zeros((chunk - n, rows.shape[1]), np.float32)])
    scores = _chunk_scores(train_feats, train_labels, jnp.asarray(rows), k=k,
                           temperature=jnp.float32(temperature), num_classes=num_classes)
    out.append(np.asarray(scores)[:n])
  return np.concatenate(out) if out else np.zeros((0, num_classes), np.float32)


def accuracy_report(scores: np.ndarray, labels: np.ndarray, class_names) -> dict[str, Any]:
  """top-1, top-5 and per-class top-1 of class scores."""
  order = np.argsort(-scores, axis=1, kind='stable')
  top1 = order[:, 0] == labels
  top5 = np.any(order[:, :5] == labels[:, None], axis=1)
  per_class = {name: float(top1[labels == c].mean()) if np.any(labels == c) else None
               for c, name in enumerate(class_names)}
  return {'top1': float(top1.mean()), 'top5': float(top5.mean()), 'per_class_top1': per_class,
          'count': int(len(labels))}


@dataclasses.dataclass
class Knn(Evaluator):
  """Weighted k-NN classification of the eval split from the train split's features of one backbone layer.

  ``run`` returns ``knn/top1``, ``knn/top5`` and ``knn/per_class_top1`` (add it to a run with
  ``config.evals.knn``, e.g. to watch a pretext task's representation while it trains); ``--mode=knn`` calls
  :meth:`result` for the whole report.
  """
  k: int = 200
  temperature: float = 0.07
  feature: str = ''            # '' = the backbone's output_name
  pool: str = 'avg'
  batch_size: int = 0          # 0 = the run's eval_batch_size

  def __post_init__(self):
    if self.k <= 0 or self.temperature <= 0:
      raise ValueError('the k-NN probe needs k > 0 and temperature > 0 (--config.knn.k / .temperature for '
                       '--mode=knn, config.evals.knn for a training run)')
    if self.pool not in POOLS:
      raise ValueError(f"unknown k-NN pool '{self.pool}'; choose one of: {', '.join(POOLS)}")
    self._compiled = {}   # (feature, pool) -> the compiled feature function: built once, not per evaluation

  def features(self, state, source):
    """(features, labels) of ``source`` at this probe's layer; the layer's name."""
    backbone = nnx.merge(self.ctx.graphdef, state.params, state.model_state).backbone
    feature = self.feature or backbone.output_name
    check_feature(backbone.feature_names, feature, self.pool, self.ctx.config.model.name, 'knn.feature')
    if feature not in self._compiled:
      self._compiled[feature] = features_lib.make_feature_fn(self.ctx, feature, self.pool)
    fn = self._compiled[feature]
    return (*features_lib.extract(self.ctx, state, source, fn, self.batch_size or None), feature)

  def result(self, state) -> dict[str, Any]:
    """The probe's report, with the eval split's features and labels under ``_features`` / ``_labels``."""
    train_f, train_y, feature = self.features(state, self.ctx.train_source)
    test_f, test_y, _ = self.features(state, self.ctx.eval_source)
    scores = knn_predict(train_f, train_y, test_f, self.k, self.temperature, self.ctx.info.num_classes)
    return {'feature': feature, 'pool': self.pool, 'dim': int(train_f.shape[1]), 'k': int(self.k),
            'temperature': float(self.temperature), 'train_count': int(len(train_y)),
            **accuracy_report(scores, test_y, self.ctx.info.class_names), '_features': test_f, '_labels': test_y}

  def run(self, state, phase: str) -> dict[str, Any]:
    r = self.result(state)
    return {f'knn/{k}': r[k] for k in ('top1', 'top5', 'per_class_top1')}
