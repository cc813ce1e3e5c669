"""The weighted k-NN probe: the pure vote against a numpy reference, and --mode=knn on the real data."""

import json
import os

import numpy as np
import pytest

from conftest import small_config
from jaxssl import cli, modes
from jaxssl.eval import knn
from jaxssl.train import experiment
from jaxssl.train.checkpoint import Checkpointer


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference(train, labels, test, k, t, c):
  scores = np.zeros((len(test), c))
  for i, row in enumerate(test):
    sims = train @ row
    for j in np.argsort(-sims)[:k]:
      scores[i, labels[j]] += np.exp(sims[j] / t)
  return scores


def test_knn_predict_matches_brute_force():
  rng = np.random.default_rng(0)
  train, test = _unit(rng.normal(size=(500, 16))), _unit(rng.normal(size=(70, 16)))
  labels = rng.integers(0, 7, size=500)
  for k, t in ((20, 0.07), (1, 0.5), (500, 1.0)):
    got = knn.knn_predict(train, labels, test, k=k, temperature=t, num_classes=7, chunk=32)  # 3 chunks, padded
    np.testing.assert_allclose(got, _reference(train, labels, test, k, t, 7), rtol=2e-4, err_msg=f'k={k}')


def test_separable_features_score_100_percent():
  rng = np.random.default_rng(1)
  centers = np.eye(10, 32)
  train_y, test_y = rng.integers(0, 10, 2000), rng.integers(0, 10, 300)
  train = _unit(centers[train_y] + 0.05 * rng.normal(size=(2000, 32)))
  test = _unit(centers[test_y] + 0.05 * rng.normal(size=(300, 32)))
  scores = knn.knn_predict(train, train_y, test, k=200, temperature=0.07, num_classes=10)
  report = knn.accuracy_report(scores, test_y, [str(c) for c in range(10)])
  assert report['top1'] == 1.0 and report['top5'] == 1.0
  assert set(report['per_class_top1'].values()) == {1.0}


def test_knn_mode_on_a_checkpoint(tfds_dir, tmp_path, capsys):
  """A (randomly initialized) CifarNet's checkpoint, probed from its own workdir and from another one via
  init_from: the same backbone gives the same report, figure for figure, far above chance on real images; another
  layer (conv2, average-pooled) gives its own."""
  src = str(tmp_path / 'src')
  config = small_config(tfds_dir, mode='knn', **{'data.train_limit': 1000, 'data.eval_limit': 250})
  ckpt = Checkpointer(os.path.join(src, 'checkpoints'), async_save=False)
  ckpt.save(0, experiment.build_experiment(config).state)
  ckpt.close()
  own = modes.evaluate_knn(config, src)
  config.init_from = src
  other = modes.evaluate_knn(config, str(tmp_path / 'probe'))
  assert own['backbone']['checkpoint'] == other['backbone']['checkpoint'] == os.path.join(src, 'checkpoints', '0')
  figures = ('feature', 'pool', 'dim', 'k', 'temperature', 'train_count', 'count', 'top1', 'top5', 'per_class_top1')
  assert {k: own[k] for k in figures} == {k: other[k] for k in figures}
  assert own['feature'] == 'fc2' and own['dim'] == 192
  assert own['count'] == 250 and own['train_count'] == 1000 and len(own['per_class_top1']) == 10
  assert 0.3 < own['top1'] <= own['top5'] <= 1.0
  with open(tmp_path / 'probe' / 'knn_test.json', encoding='utf-8') as f:
    assert {k: v for k, v in json.load(f).items() if k != 'backbone'} == \
        {k: v for k, v in other.items() if k != 'backbone'}
  config.knn.feature, config.knn.pool = 'conv2', 'avg'
  conv2 = modes.evaluate_knn(config, str(tmp_path / 'conv2'))
  assert conv2['feature'] == 'conv2' and conv2['pool'] == 'avg' and conv2['dim'] == 64
  assert conv2['count'] == 250 and 0.3 < conv2['top1'] <= conv2['top5'] <= 1.0
  # A layer the backbone lacks: the one line every command prints for it (exit code 2), before any feature.
  config.knn.feature = 'pool9'
  with pytest.raises(SystemExit) as stop, cli.errors_as_one_line():
    modes.evaluate_knn(config, str(tmp_path / 'typo'))
  assert stop.value.code == 2
  assert capsys.readouterr().err.strip().splitlines() == [
      "error: knn.feature 'pool9' is not a feature of cifarnet; it has: conv1, pool1, conv2, pool2, fc1, fc2"]
