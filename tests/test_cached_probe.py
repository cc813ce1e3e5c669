"""The cached per-layer linear probe (jaxssl/eval/cached_probe.py): pooling, the cache, choices made on validation
only, and a probe that tells a trained backbone from a random one on the real Fashion-MNIST."""

import os

import numpy as np
import pytest

from conftest import small_config
from jaxssl.eval import cached_probe
from jaxssl.train import experiment, loop


def test_adaptive_pool_bins_and_the_size_rule():
  # 4 -> 2: block means; 3 -> 2: PyTorch's overlapping bins [0, 2) and [1, 3).
  np.testing.assert_allclose(cached_probe.adaptive_pool_matrix(4, 2), [[.5, .5, 0, 0], [0, 0, .5, .5]])
  np.testing.assert_allclose(cached_probe.adaptive_pool_matrix(3, 2), [[.5, .5, 0], [0, .5, .5]])
  h = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
  pooled = np.asarray(cached_probe.pool_to(h, max_dim=12)).reshape(2, 2, 2, 3)
  np.testing.assert_allclose(pooled[1, 0, 1], h[1, :2, 2:].mean(axis=(0, 1)))
  # CifarNet on 28 px images: the 64-channel maps go to 12 x 12 x 64 = 9216 dims; pool2 (7 x 7) and fc stay whole.
  assert [cached_probe.pooled_side(s, 64, 9216) for s in (28, 14, 7)] == [12, 12, 7]
  assert np.asarray(cached_probe.pool_to(np.ones((2, 384), np.float32), 9216)).shape == (2, 384)


def test_standardizing_statistics_of_every_row_or_of_some_rows():
  """train_statistics (chunked float64 sums over a float16 cache) gives the per-dim mean and 1/std of every row
  or of the given rows only; a constant dim gets scale 1."""
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(5000, 6)) * [1, 2, 3, 4, 5, 0] + [0, 1, 2, 3, 4, 7]).astype(np.float16)
  rows = rng.choice(5000, 700, replace=False)
  for chunk in (64, 2048, 10000):
    for picked in (None, rows):
      want = x.astype(np.float64) if picked is None else x[picked].astype(np.float64)
      mean, scale = cached_probe.train_statistics(x, chunk=chunk, rows=picked)
      np.testing.assert_allclose(mean, want.mean(0), rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(scale[:5], 1 / want.std(0)[:5], rtol=1e-4)
      assert scale[5] == 1.0


def test_a_separable_feature_set_is_fit_perfectly():
  rng = np.random.default_rng(0)
  centres = 4.0 * rng.normal(size=(3, 16))

  def draw(n):
    y = rng.integers(0, 3, n)
    return (centres[y] + 0.3 * rng.normal(size=(n, 16))).astype(np.float16), y

  (tx, ty), (vx, vy), (sx, sy) = draw(300), draw(60), draw(90)
  fit = cached_probe.fit_probe(tx, ty, vx, vy, num_classes=3, l2_grid=(1e-4, 1e-2), epochs=10, batch_size=32,
                               lr=1e-2)
  assert fit['val_top1'] == 1.0
  assert cached_probe.score(fit, sx, sy)['top1'] == 1.0


def test_epochs_fitted_together_between_evaluations_train_as_one_by_one():
  """fit_probe trains the epochs between two evaluations in one call: the probe at an evaluated epoch is the same
  whether every epoch was evaluated (a call each) or every fourth (the val scores there equal)."""
  rng = np.random.default_rng(1)
  centres = rng.normal(size=(4, 32))
  y = rng.integers(0, 4, 90)
  x = (centres[y] + 1.5 * rng.normal(size=(90, 32))).astype(np.float16)
  vy = rng.integers(0, 4, 400)
  vx = (centres[vy] + 1.5 * rng.normal(size=(400, 32))).astype(np.float16)
  # Two minibatches an epoch, and one (a 50-image subset's: its epochs were scans of one step).
  for batch, evals, evaluated in ((40, 3, [3, 6, 9, 11]), (90, 4, [5, 10, 15, 20, 22])):
    fits = [cached_probe.fit_probe(x, y, vx, vy, num_classes=4, l2_grid=(1e-3, 1e-1), epochs=1, batch_size=batch,
                                   min_steps=22, max_evals=n, lr=3e-2) for n in (22, evals)]
    assert list(fits[0]['val_history']) == list(range(1, len(fits[0]['val_history']) + 1))
    assert list(fits[1]['val_history']) == evaluated
    assert len({tuple(v) for v in fits[0]['val_history'].values()}) > 3   # the probe moves between evaluations
    for epoch, scores in fits[1]['val_history'].items():
      assert scores == fits[0]['val_history'][epoch], (batch, epoch)


@pytest.fixture(scope='module')
def backbones(tfds_dir, tmp_path_factory):
  """A supervised run of 250 steps (Adam, no augmentation: about 8 epochs) on 2,048 real training images, and the
  same config's random backbone. Fewer steps do not do: a random CifarNet's fc1 probes at about 82% on this slice,
  and 100-150 steps of training leave fc1 no better (measured 2026-11-30: 80-83%; 300 steps: 86%)."""
  root = tmp_path_factory.mktemp('probe')
  base = small_config(tfds_dir, **{'data.eval_limit': 2000, 'total_steps': 250, 'checkpoint_every': 250,
                                   'eval_every': 0, 'log_every': 250, 'optim.name': 'adam', 'optim.lr': 1e-3,
                                   'tasks.classify.crop_padding': 0, 'tasks.classify.flip': False})
  loop.train_and_evaluate(base, str(root / 'supervised'))
  out = {}
  for name, init in (('supervised', str(root / 'supervised')), ('random', '')):
    c = base.copy_and_resolve_references()
    c.init_from = init
    exp = experiment.build_experiment(c)
    out[name] = (exp, exp.state, str(root / name / 'features'))
  return out


def _extract(backbone, layers):
  exp, state, cache = backbone
  return cached_probe.extract(exp.eval_context(os.path.dirname(cache)), state, cache, layers, max_dim=9216,
                              batch_size=256)


def test_trained_backbone_beats_random_at_fc1_and_the_cache_is_reused(backbones):
  got = {}
  for name, backbone in backbones.items():
    info = _extract(backbone, ['fc1', 'conv2'])
    assert info['extracted'] == {'train': ['fc1', 'conv2'], 'test': ['fc1', 'conv2']}
    cache = backbone[2]
    assert np.load(cached_probe.cache_path(cache, 'train', 'conv2')).shape == (2048, 9216)   # 14 x 14 -> 12 x 12
    labels = np.load(cached_probe.cache_path(cache, 'train', 'labels'))
    train_idx, val_idx = cached_probe.val_split(labels, 0.1, 0)
    assert len(np.intersect1d(train_idx, val_idx)) == 0 and len(train_idx) + len(val_idx) == 2048
    got[name] = cached_probe.probe_layer(cache, 'fc1', train_idx, val_idx, num_classes=10, epochs=20)
  assert got['supervised']['test_top1'] > got['random']['test_top1'] + 0.015, got
  # A second extraction finds every file: no forward pass, nothing rewritten; a removed layer alone comes back.
  cache = backbones['supervised'][2]
  stamps = {f: os.path.getmtime(os.path.join(cache, f)) for f in os.listdir(cache)}
  before = cached_probe.STATS['extractions']
  assert not _extract(backbones['supervised'], ['fc1', 'conv2'])['extracted']
  assert cached_probe.STATS['extractions'] == before
  assert {f: os.path.getmtime(os.path.join(cache, f)) for f in os.listdir(cache)} == stamps
  os.remove(cached_probe.cache_path(cache, 'train', 'conv2'))
  assert _extract(backbones['supervised'], ['fc1', 'conv2'])['extracted'] == {'train': ['conv2']}
  assert cached_probe.STATS['extractions'] == before + 1


def test_choices_are_made_on_validation_not_on_test(backbones):
  cache = backbones['supervised'][2]
  _extract(backbones['supervised'], ['fc1'])
  labels = np.load(cached_probe.cache_path(cache, 'train', 'labels'))
  train_idx, val_idx = cached_probe.val_split(labels, 0.1, 0)
  options = {'num_classes': 10, 'l2_grid': (1e-4, 1e-2, 1.0), 'epochs': 8}
  first = cached_probe.probe_layer(cache, 'fc1', train_idx, val_idx, **options)
  test_labels = cached_probe.cache_path(cache, 'test', 'labels')
  true = np.load(test_labels)
  np.save(test_labels, np.roll(true, 1))   # other test labels: other test scores, the same choice
  try:
    second = cached_probe.probe_layer(cache, 'fc1', train_idx, val_idx, **options)
  finally:
    np.save(test_labels, true)
  assert (second['l2'], second['epoch'], second['val_grid']) == (first['l2'], first['epoch'], first['val_grid'])
  assert second['test_top1'] != first['test_top1']
  # probe_all: one file per layer, the best layer chosen by validation accuracy.
  out = os.path.join(os.path.dirname(cache), 'probe')
  summary = cached_probe.probe_all(cache, out, ['fc1'], num_classes=10, epochs=4)
  assert summary['best_layer'] == 'fc1' and os.path.exists(os.path.join(out, 'probe_fc1.json'))
  assert summary['layers']['fc1']['val_count'] == len(val_idx)
