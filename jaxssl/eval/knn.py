"""Weighted k-nearest-neighbour probe of a backbone (``--mode=knn``): no training, so it measures only what the
features already separate.

Protocol of Wu et al. 2018 ("Unsupervised feature learning via non-parametric instance discrimination"): the
features of one layer, L2-normalized; each eval image's k most cosine-similar train images vote for their
label with weight exp(similarity / T); k=200, T=0.07.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxssl.data import pipeline
from jaxssl.tasks.base import normalize
from jaxssl.tasks.classification import pool_feature
from jaxssl.train import mesh as mesh_lib
from jaxssl.train.logging import log
from jaxssl.train.state import merge_model


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


def make_feature_fn(exp, task, feature: str, pool: str):
  """Jitted (state, images) -> L2-normalized [B, D] features of ``feature``; batch split over the mesh."""

  def features(state, images):
    model = merge_model(exp.graphdef, state.params, state.model_state)
    h = model.backbone(normalize(images, task.mean, task.std), train=False)[feature]
    h = pool_feature(h, pool).reshape(images.shape[0], -1).astype(jnp.float32)
    return h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-12)

  replicated = mesh_lib.replicated(exp.mesh)
  return jax.jit(features, in_shardings=(replicated, mesh_lib.batch_sharding(exp.mesh)),
                 out_shardings=mesh_lib.batch_sharding(exp.mesh))


def _host(x) -> np.ndarray:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def extract(exp, state, source, feature_fn, task, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Features and labels of every record of ``source`` (padding rows dropped)."""
  feats, labels = [], []
  for batch in pipeline.eval_batches(source, [task], global_batch=batch_size, seed=exp.config.seed):
    b = batch[task.name]
    sharded = mesh_lib.shard_batch({k: b[k] for k in ('image', 'label', 'weight')}, exp.mesh)
    f = _host(feature_fn(state, sharded['image']))
    keep, lab = _host(sharded['weight']) > 0, _host(sharded['label'])  # in the features' (global) order
    feats.append(f[keep])
    labels.append(lab[keep])
  return np.concatenate(feats), np.concatenate(labels)


def accuracy_report(scores: np.ndarray, labels: np.ndarray, class_names) -> dict[str, Any]:
  """top-1, top-5 and per-class top-1 of class scores."""
  order = np.argsort(-scores, axis=1, kind='stable')
  top1 = order[:, 0] == labels
  top5 = np.any(order[:, :5] == labels[:, None], axis=1)
  per_class = {name: float(top1[labels == c].mean()) if np.any(labels == c) else None
               for c, name in enumerate(class_names)}
  return {'top1': float(top1.mean()), 'top5': float(top5.mean()), 'per_class_top1': per_class,
          'count': int(len(labels))}


def evaluate_knn(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """``--mode=knn``: the backbone of ``config.init_from`` (or this workdir's latest checkpoint), kNN-classifies
  ``data.eval_split`` from ``data.train_split``; writes ``knn_<split>.json`` and ``embedding.png|csv`` (PCA of
  the features of the first 2,000 eval images) into the workdir."""
  from jaxssl.train import loop, transfer  # pylint: disable=import-outside-toplevel
  from jaxssl.train.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  os.makedirs(workdir, exist_ok=True)
  exp = loop.build_experiment(config, load_init=bool(config.get('init_from', '')))
  state, origin = exp.state, exp.init_info
  if origin is None:
    if not transfer.has_checkpoint(workdir):
      raise FileNotFoundError(f'--mode=knn needs a backbone: set --config.init_from=<trained workdir>, or point '
                              f'--workdir at a trained run (no checkpoints in {workdir})')
    ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True)
    state, _, _ = ckpt.restore(None, exp.state, mesh_lib.replicated(exp.mesh))
    ckpt.close()
    origin = {'checkpoint': os.path.join(ckpt.directory, str(int(state.step)))}
  task = next((t for t in exp.tasks if hasattr(t, 'num_classes')), None)
  if task is None:
    raise ValueError('--mode=knn needs a labelled task (tasks.classify) for the labels and normalization')
  kcfg = config.knn
  model = merge_model(exp.graphdef, state.params, state.model_state)
  feature = kcfg.feature or model.backbone.output_name
  if feature not in model.backbone.feature_names:
    raise ValueError(f"knn.feature '{feature}' is not a feature of {config.model.name}; it has: "
                     f"{', '.join(model.backbone.feature_names)}")
  feature_fn = make_feature_fn(exp, task, feature, kcfg.pool)
  t0 = time.perf_counter()
  batch = kcfg.get('batch_size', config.eval_batch_size)
  train_f, train_y = extract(exp, state, exp.train_source, feature_fn, task, batch)
  test_f, test_y = extract(exp, state, exp.eval_source, feature_fn, task, batch)
  scores = knn_predict(train_f, train_y, test_f, kcfg.k, kcfg.temperature, exp.info.num_classes)
  result = {'split': config.data.eval_split, 'train_split': config.data.train_split, 'feature': feature,
            'pool': kcfg.pool, 'dim': int(train_f.shape[1]), 'k': int(kcfg.k), 'temperature': float(kcfg.temperature),
            'train_count': int(len(train_y)), 'backbone': origin, 'dataset': config.data.name,
            'model': config.model.name, **accuracy_report(scores, test_y, exp.info.class_names)}
  if jax.process_index() == 0:
    path = os.path.join(workdir, f'knn_{config.data.eval_split}.json')
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)
    from jaxssl.eval import embedding  # pylint: disable=import-outside-toplevel
    embedding.embedding_for_run(test_f, test_y, exp.info.class_names, workdir, f'{feature}/{kcfg.pool}',
                                config.data.eval_split)
    log(f"knn {feature}/{kcfg.pool} k={kcfg.k} on {config.data.eval_split} "
        f"({time.perf_counter() - t0:.1f}s): top1={result['top1']:.4f} top5={result['top5']:.4f} -> {path}")
  return result
