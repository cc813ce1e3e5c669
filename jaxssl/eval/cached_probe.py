"""Linear probes of every backbone layer on features extracted once and cached: a probe then takes seconds, not a
training run of the backbone's forward per layer and per regularization strength.

The protocol (issue 18; RotNet, Gidaris et al. 2018, and Zhang et al. 2017 probe every layer the same way):

- **Features.** One forward pass of the frozen backbone (inference mode) over the train and test records gives
  every layer at once. A spatial map ``H x W x C`` is average-pooled adaptively to ``s x s x C`` with ``s`` the
  largest size with ``s * s * C <= max_dim`` (and ``s <= H``), so no layer has more than ``max_dim`` dims (9,216
  by default: CifarNet's 64-channel maps on 28 px images become 12 x 12 x 64; ``pool2``, 7 x 7 x 64 = 3,136, and the
  fc layers are kept whole). The bins are PyTorch's ``AdaptiveAvgPool2d``'s: bin ``i`` of ``s`` covers rows
  ``floor(i H / s)`` to ``ceil((i + 1) H / s)``. Stored as float16 ``.npy`` per split and layer in the cache folder
  (CifarNet, all 70,000 Fashion-MNIST records, measured: 1.29 GB for each 9,216-dim layer, 0.44 GB for pool2, 0.05
  GB for fc1: 4.4 GB per backbone; 45 s to extract on a shared 2-core CPU); a layer whose file exists is not
  extracted again (resumable, and a rerun is free).
- **Validation.** A class-stratified ``val_fraction`` of the training records (fixed ``val_seed``: the same images
  for every backbone) is held out of the probe's training set; every choice is made on it: the L2 strength from
  a grid and the epoch (the best validation epoch of each strength is kept). The test split is scored once per
  layer, with the chosen probe only.
- **Probe.** Multinomial logistic regression on features standardized with the training part's mean and std
  (a dimension without variance is left unscaled), mean cross-entropy + ``l2 / 2 * ||W||^2``, Adam with a cosine
  learning rate over shuffled minibatches, every grid strength trained at once (one matmul serves them all), in
  one jitted function per epoch.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxssl.data import datasets, subsets
from jaxssl.eval.knn import accuracy_report, knn_predict
from jaxssl.runlog import log, write_json, write_text
from jaxssl.tasks.base import normalize

DEFAULT_MAX_DIM = 9216
DEFAULT_L2 = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
SPLITS = ('train', 'test')
# How many forward passes over a split this process made (tests check that a cached layer is not extracted again).
STATS = {'extractions': 0}


# ---------------------------------------------------------------------------------------------- pooling


def pooled_side(height: int, channels: int, max_dim: int) -> int:
  """The side ``s`` an ``H x H x C`` map is pooled to: the largest with ``s * s * C <= max_dim``, at most H."""
  return max(1, min(int(height), math.isqrt(max(1, int(max_dim) // max(1, int(channels))))))


def adaptive_pool_matrix(size: int, out: int) -> np.ndarray:
  """[out, size] averaging weights of PyTorch's adaptive average pooling along one axis."""
  m = np.zeros((out, size), np.float32)
  for i in range(out):
    start, end = (i * size) // out, -(-((i + 1) * size) // out)
    m[i, start:end] = 1.0 / (end - start)
  return m


def pool_to(h: jax.Array, max_dim: int) -> jax.Array:
  """[B, H, W, C] -> [B, s * s * C] by adaptive average pooling (module docstring); [B, D] stays as it is."""
  if h.ndim == 2:
    return h
  b, height, width, channels = h.shape
  s = pooled_side(min(height, width), channels, max_dim)
  if (s, s) != (height, width):
    rows, cols = (jnp.asarray(adaptive_pool_matrix(n, s)) for n in (height, width))
    h = jnp.einsum('ih,jw,bhwc->bijc', rows, cols, h.astype(jnp.float32))
  return h.reshape(b, -1)


# ---------------------------------------------------------------------------------------------- the cache


def cache_path(cache_dir: str, split: str, layer: str) -> str:
  return os.path.join(cache_dir, f'{split}_{layer}.npy')


def _save(path: str, array: np.ndarray) -> None:
  tmp = f'{path}.tmp-{os.getpid()}.npy'
  np.save(tmp, array)
  os.replace(tmp, path)  # whole or not at all: a killed extraction leaves no half file that would count as done


def make_layers_fn(ctx, layers, max_dim: int):
  """Compiled (state, raw batch) -> {layer: float16 [B, D]} of the backbone's ``layers``, pooled by
  :func:`pool_to`, inputs standardized with the dataset's statistics, the backbone in inference mode."""
  info = ctx.info

  def fn(model, batch):
    out = model.backbone(normalize(batch['image'], info.mean, info.std), train=False)
    return {layer: pool_to(out[layer], max_dim).astype(jnp.float16) for layer in layers}

  return ctx.compile(fn, per_example=True)


def extract(ctx, state, cache_dir: str, layers, *, max_dim: int = DEFAULT_MAX_DIM, batch_size: int | None = None,
            sources: dict[str, Any] | None = None) -> dict[str, Any]:
  """Writes ``<split>_<layer>.npy`` (float16) and ``<split>_labels.npy`` of ``sources`` (default: the context's
  train and eval sources as 'train' and 'test') for every layer whose file is not there yet, in one forward pass
  per split. Returns what it did: the layers extracted per split, the seconds, the sizes of every file."""
  sources = sources or {'train': ctx.train_source, 'test': ctx.eval_source}
  os.makedirs(cache_dir, exist_ok=True)
  t0 = time.perf_counter()
  done: dict[str, list[str]] = {}
  for split, source in sources.items():
    missing = [l for l in layers if not os.path.exists(cache_path(cache_dir, split, l))]
    labels_path = cache_path(cache_dir, split, 'labels')
    if not missing and os.path.exists(labels_path):
      continue
    fn = make_layers_fn(ctx, missing, max_dim)
    got = ctx.gather(fn, state, ctx.batches(source, tasks=None, batch_size=batch_size),
                     keep=lambda b: b['weight'] > 0, fields=lambda b: {'label': _labels(b)})
    STATS['extractions'] += 1
    for layer in missing:
      _save(cache_path(cache_dir, split, layer), got[layer].astype(np.float16))
    _save(labels_path, got['label'].astype(np.int32))
    done[split] = missing
  sizes = {f: os.path.getsize(os.path.join(cache_dir, f)) for f in sorted(os.listdir(cache_dir))
           if f.endswith('.npy') and '.tmp-' not in f}
  return {'extracted': done, 'seconds': time.perf_counter() - t0, 'bytes': sizes}


def _labels(batch):
  datasets.require_labels(batch, 'a linear probe (and k-NN) of cached features')
  return batch['label']


def load(cache_dir: str, split: str, layer: str) -> np.ndarray:
  return np.load(cache_path(cache_dir, split, layer), mmap_mode='r')


def remove_cache(cache_dir: str) -> None:
  """Deletes the cached arrays (the probe results stay): 4.4 GB per CifarNet backbone on all of Fashion-MNIST."""
  if os.path.isdir(cache_dir):
    for f in os.listdir(cache_dir):
      if f.endswith('.npy'):
        os.remove(os.path.join(cache_dir, f))


def val_split(labels, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train indices, val indices): a class-stratified ``fraction`` of the records held out with ``seed``, the same
  records ``data.holdout_fraction`` / ``holdout_seed`` hold out of a training run (subsets.holdout_split)."""
  return subsets.holdout_split(labels, fraction, seed)


# ---------------------------------------------------------------------------------------------- the probe


def _logits(params, x):
  """[B, G, C] logits of every grid member: one matmul of x [B, D] with the weights [D, G, C] side by side."""
  return jnp.einsum('bd,dgc->bgc', x, params['w']) + params['b'][None]


def _standardize(x, mean, scale):
  return (x.astype(jnp.float32) - mean) * scale


@functools.partial(jax.jit, static_argnames=('tx',))
def _epoch(params, opt_state, x, y, order, mean, scale, l2, *, tx):
  """One pass over the minibatches ``order`` [steps, B] of the device arrays ``x`` (float16) and ``y``."""

  def loss_fn(p, xb, yb):
    logits = _logits(p, xb)                                              # [B, G, C]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb[:, None]).mean(axis=0)
    return jnp.sum(ce + 0.5 * l2 * jnp.sum(p['w'] ** 2, axis=(0, 2)))    # the grid's losses are independent

  def step(carry, idx):
    p, s = carry
    xb = _standardize(x[idx], mean, scale)
    grads = jax.grad(loss_fn)(p, xb, y[idx])
    updates, s = tx.update(grads, s, p)
    return (optax.apply_updates(p, updates), s), None

  (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), order)
  return params, opt_state


@jax.jit
def _correct(params, x, y, mean, scale):
  """[G] numbers of rows each grid member classifies right."""
  pred = jnp.argmax(_logits(params, _standardize(x, mean, scale)), axis=-1)   # [B, G]
  return jnp.sum(pred == y[:, None], axis=0)


def _count_correct(params, x, y, mean, scale, chunk: int = 8192) -> np.ndarray:
  total = 0
  for start in range(0, len(x), chunk):
    xs, ys = (jnp.asarray(a[start:start + chunk]) for a in (x, y))
    total = total + np.asarray(_correct(params, xs, ys, mean, scale))
  return np.asarray(total)


def _predict(params, g: int, x, mean, scale, chunk: int = 8192) -> np.ndarray:
  one = {'w': params['w'][:, g:g + 1], 'b': params['b'][g:g + 1]}
  out = [np.asarray(_logits(one, _standardize(jnp.asarray(x[s:s + chunk]), mean, scale))[:, 0])
         for s in range(0, len(x), chunk)]
  return np.concatenate(out)


def train_statistics(x: np.ndarray, chunk: int = 2048, rows=None) -> tuple[np.ndarray, np.ndarray]:
  """Per-dim mean and 1/std of ``x`` (of its ``rows`` where given; float64 sums in chunks: no float32 copy of a GB
  array); 1 where std ~ 0."""
  count = len(x) if rows is None else len(rows)
  rows = None if rows is None else np.asarray(rows)
  s = np.zeros(x.shape[1], np.float64)
  ss = np.zeros(x.shape[1], np.float64)
  for start in range(0, count, chunk):
    # Every row: a slice of the (memory-mapped) cache, read in order; else the given rows' gather.
    part = np.asarray(x[start:start + chunk] if rows is None else x[rows[start:start + chunk]], np.float64)
    s += part.sum(0)
    ss += (part ** 2).sum(0)
  mean = s / count
  std = np.sqrt(np.maximum(ss / count - mean ** 2, 0.0))
  scale = np.where(std > 1e-6, 1.0 / np.maximum(std, 1e-6), 1.0)
  return mean.astype(np.float32), scale.astype(np.float32)


def fit_probe(train_x, train_y, val_x, val_y, *, num_classes: int, l2_grid=DEFAULT_L2, epochs: int = 30,
              batch_size: int = 512, lr: float = 1e-3, min_steps: int = 1000, max_evals: int = 50,
              seed: int = 0, stats=None) -> dict[str, Any]:
  """Trains one logistic-regression probe per strength in ``l2_grid`` at once and keeps, for each, its weights at
  its best validation epoch; the chosen probe is the best of those on validation (ties: the stronger L2, then the
  earlier epoch). At least ``min_steps`` updates in all: a few thousand records make few minibatches an epoch, and
  ``epochs`` of them leave the probe far from its optimum (a trained backbone's layer then probes below a random
  one's). Validation is scored after every epoch, or every ``epochs // max_evals`` epochs where there are more
  (and after the last). The features are standardized by ``stats`` (mean, 1/std) where given, else by the training
  records' own: a few labelled records (a 50-image subset) give unstable statistics, and the unlabelled training
  images' features are there to take them from. Returns ``{'l2', 'epoch', 'val_top1', 'val_grid': {l2: (best
  val top-1, epoch)}, 'val_history': {epoch: [val top-1 per l2, the stronger first]}, 'params', 'mean', 'scale'}``;
  the caller scores the test split once with :func:`score`."""
  grid = sorted((float(v) for v in l2_grid), reverse=True)   # the stronger first: it wins ties
  n, dim = train_x.shape
  batch = max(1, min(int(batch_size), n))
  steps = n // batch
  epochs = max(int(epochs), -(-int(min_steps) // steps))
  mean, scale = (jnp.asarray(a) for a in (train_statistics(train_x) if stats is None else stats))
  x = jnp.asarray(np.asarray(train_x, np.float16))
  y = jnp.asarray(np.asarray(train_y, np.int32))
  # On the device once: 50 evaluations of 6,000 x 9,216 features each converted again cost more than a 50-image
  # probe's training.
  vx, vy = jnp.asarray(np.asarray(val_x, np.float16)), np.asarray(val_y, np.int32)
  g = len(grid)
  params = {'w': jnp.zeros((dim, g, num_classes), jnp.float32), 'b': jnp.zeros((g, num_classes), jnp.float32)}
  tx = optax.adam(optax.cosine_decay_schedule(lr, max(1, epochs * steps)))
  opt_state = tx.init(params)
  l2 = jnp.asarray(grid, jnp.float32)
  rng = np.random.default_rng(seed)
  best = {'w': np.zeros((dim, g, num_classes), np.float32), 'b': np.zeros((g, num_classes), np.float32)}
  best_acc, best_epoch = np.full(g, -1.0), np.zeros(g, np.int64)
  every = max(1, epochs // max_evals)
  history = {}
  for epoch in [*range(every, epochs + 1, every), *([epochs] if epochs % every else [])]:   # the evaluated ones
    # The epochs since the last evaluation in one call (a 50-image subset makes an epoch of one step: a call per
    # epoch was a thousand dispatches), their minibatches drawn epoch by epoch as before.
    since = epoch - (epoch - 1) // every * every
    order = np.concatenate([rng.permutation(n)[:steps * batch].reshape(steps, batch) for _ in range(since)])
    params, opt_state = _epoch(params, opt_state, x, y, jnp.asarray(order), mean, scale, l2, tx=tx)
    acc = _count_correct(params, vx, vy, mean, scale) / max(1, len(vy))
    history[epoch] = [float(a) for a in acc]
    better = acc > best_acc
    if better.any():
      w, b = np.asarray(params['w']), np.asarray(params['b'])
      best['w'][:, better], best['b'][better] = w[:, better], b[better]
      best_acc[better], best_epoch[better] = acc[better], epoch
  pick = int(np.argmax(best_acc))   # first maximum: the strongest L2 among equals
  return {'l2': grid[pick], 'epoch': int(best_epoch[pick]), 'val_top1': float(best_acc[pick]),
          'val_grid': {f'{v:g}': [float(a), int(e)] for v, a, e in zip(grid, best_acc, best_epoch)},
          'val_history': history,
          'params': {'w': best['w'][:, pick:pick + 1], 'b': best['b'][pick:pick + 1]},
          'mean': np.asarray(mean), 'scale': np.asarray(scale)}


def score(fit: dict[str, Any], x, y, class_names=None) -> dict[str, Any]:
  """top-1, top-5 and per-class top-1 of the chosen probe ``fit`` on (x, y): the one look at the test split."""
  logits = _predict(fit['params'], 0, np.asarray(x, np.float16), jnp.asarray(fit['mean']), jnp.asarray(fit['scale']))
  y = np.asarray(y)
  names = class_names or [str(c) for c in range(logits.shape[1])]
  return accuracy_report(logits, y, names)


def probe_layer(cache_dir: str, layer: str, train_idx, val_idx, *, num_classes: int, class_names=None,
                **fit_options) -> dict[str, Any]:
  """The per-layer result: fit on the cached train part, choose on val, score test once (``fit_options``:
  :func:`fit_probe`'s, ``stats`` included)."""
  t0 = time.perf_counter()
  labels = np.load(cache_path(cache_dir, 'train', 'labels'))
  feats = load(cache_dir, 'train', layer)
  fit = fit_probe(feats[train_idx], labels[train_idx], feats[val_idx], labels[val_idx], num_classes=num_classes,
                  **fit_options)
  test = score(fit, load(cache_dir, 'test', layer), np.load(cache_path(cache_dir, 'test', 'labels')), class_names)
  return {'layer': layer, 'dim': int(feats.shape[1]), 'l2': fit['l2'], 'epoch': fit['epoch'],
          'val_top1': fit['val_top1'], 'val_grid': fit['val_grid'], 'test_top1': test['top1'],
          'test_top5': test['top5'], 'per_class_top1': test['per_class_top1'], 'train_count': int(len(train_idx)),
          'val_count': int(len(val_idx)), 'test_count': test['count'], 'seconds': time.perf_counter() - t0}


def probe_subsets(cache_dir: str, layers, subsets: dict[Any, np.ndarray], val_idx, *, stats_rows, num_classes: int,
                  class_names=None, **fit_options) -> dict[Any, dict[str, Any]]:
  """Few labels, frozen features: a probe of each of ``layers`` fitted on each subset of ``subsets`` (key -> train
  record indices), its layer, L2 strength and epoch chosen on ``val_idx`` for each subset (ties: the earlier
  layer), the test split scored once, by the chosen probe. The features are standardized by those of
  ``stats_rows`` (the unlabelled records the subsets are drawn from). Each layer's validation features and
  statistics are read once for every subset. Returns, per key: ``{'layer', 'test_top1', 'test_top5', 'val_top1',
  'l2', 'epoch', 'train_count', 'val_by_layer': {layer: val top-1}, 'seconds'}``."""
  labels = np.load(cache_path(cache_dir, 'train', 'labels'))
  fits: dict[Any, dict[str, Any]] = {key: {} for key in subsets}   # per subset: layer -> its fit
  seconds = dict.fromkeys(subsets, 0.0)
  for layer in layers:
    t0 = time.perf_counter()
    feats = load(cache_dir, 'train', layer)
    stats = train_statistics(feats, rows=stats_rows)
    val_x, val_y = np.asarray(feats[val_idx]), labels[val_idx]
    shared = (time.perf_counter() - t0) / max(1, len(subsets))
    for key, idx in subsets.items():
      t0 = time.perf_counter()
      fits[key][layer] = fit_probe(feats[idx], labels[idx], val_x, val_y, num_classes=num_classes, stats=stats,
                                   **fit_options)
      seconds[key] += shared + time.perf_counter() - t0
  test_labels = np.load(cache_path(cache_dir, 'test', 'labels'))
  out = {}
  for key, by_layer in fits.items():
    t0 = time.perf_counter()
    layer = max(layers, key=lambda name, fit=by_layer: fit[name]['val_top1'])   # the first best: the earlier layer
    fit = by_layer[layer]
    test = score(fit, load(cache_dir, 'test', layer), test_labels, class_names)
    out[key] = {'layer': layer, 'test_top1': test['top1'], 'test_top5': test['top5'], 'val_top1': fit['val_top1'],
                'l2': fit['l2'], 'epoch': fit['epoch'], 'train_count': int(len(subsets[key])),
                'val_by_layer': {name: by_layer[name]['val_top1'] for name in layers},
                'seconds': seconds[key] + time.perf_counter() - t0}
  return out


def probe_all(cache_dir: str, out_dir: str, layers, *, num_classes: int, class_names=None, val_fraction: float = 0.1,
              val_seed: int = 0, **fit_options) -> dict[str, Any]:
  """:func:`probe_layer` for every layer whose ``probe_<layer>.json`` is not in ``out_dir`` yet; writes it per
  layer as it goes, then ``probe.json`` (every layer, the best by validation) and ``probe.csv``."""
  os.makedirs(out_dir, exist_ok=True)
  train_idx, val_idx = val_split(np.load(cache_path(cache_dir, 'train', 'labels')), val_fraction, val_seed)
  results = {}
  for i, layer in enumerate(layers):
    path = os.path.join(out_dir, f'probe_{layer}.json')
    if not os.path.exists(path):
      r = probe_layer(cache_dir, layer, train_idx, val_idx, num_classes=num_classes, class_names=class_names,
                      **fit_options)
      write_json(path, r)
      log(f"  probe {layer} ({i + 1}/{len(layers)}, {r['dim']} dims, {r['seconds']:.0f}s): l2={r['l2']:g} "
          f"epoch {r['epoch']} val {r['val_top1']:.4f} test {r['test_top1']:.4f}")
    with open(path, encoding='utf-8') as f:
      results[layer] = json.load(f)
  best = max(layers, key=lambda l: results[l]['val_top1'])   # chosen on validation, never on test
  summary = {'layers': results, 'best_layer': best, 'val_fraction': val_fraction, 'val_seed': val_seed,
             'fit_options': {k: list(v) if isinstance(v, tuple) else v for k, v in fit_options.items()}}
  write_json(os.path.join(out_dir, 'probe.json'), summary)
  rows = ['layer,dim,l2,epoch,val_top1,test_top1,test_top5,seconds'] + [
      f"{l},{r['dim']},{r['l2']:g},{r['epoch']},{r['val_top1']:.4f},{r['test_top1']:.4f},{r['test_top5']:.4f},"
      f"{r['seconds']:.1f}" for l, r in results.items()]
  write_text(os.path.join(out_dir, 'probe.csv'), '\n'.join(rows) + '\n')
  return summary


def knn_layer(cache_dir: str, layer: str, train_idx, *, num_classes: int, class_names=None, k: int = 200,
              temperature: float = 0.07) -> dict[str, Any]:
  """Weighted k-NN (jaxssl/eval/knn.py: cosine, exp(sim / T) votes) of the test split among the probe's training
  part (validation held out), on the cached (pooled) features of ``layer``, L2-normalized."""
  t0 = time.perf_counter()

  def unit(a):
    a = np.asarray(a, np.float32)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

  labels = np.load(cache_path(cache_dir, 'train', 'labels'))
  train = unit(load(cache_dir, 'train', layer)[train_idx])
  test_y = np.load(cache_path(cache_dir, 'test', 'labels'))
  scores = knn_predict(train, labels[train_idx], unit(load(cache_dir, 'test', layer)), k, temperature, num_classes)
  r = accuracy_report(scores, test_y, class_names or [str(c) for c in range(num_classes)])
  return {'layer': layer, 'k': int(k), 'temperature': float(temperature), 'train_count': int(len(train_idx)),
          'test_top1': r['top1'], 'test_top5': r['top5'], 'per_class_top1': r['per_class_top1'],
          'test_count': r['count'], 'seconds': time.perf_counter() - t0}
