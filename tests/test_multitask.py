"""The category + attribute multi-task model: crops, loss, heads, the submission files, and a short run on the
real DeepFashion sample whose predictions parse back to the model's outputs."""

import csv
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from test_deepfashion import CATEGORIES, GROUP_SIZES, make_benchmark
from configs import deepfashion_multitask
from jaxssl import modes
from jaxssl.data import augment, datasets, deepfashion, sources
from jaxssl.tasks import attribute_metrics as am
from jaxssl.eval import attributes as mt_eval
from jaxssl.runlog import read_metrics
from jaxssl.tasks.base import metric_mean
from jaxssl.tasks.category_attributes import CategoryAttributes
from jaxssl.train import loop

STATS = {'mean': (0.5, 0.5, 0.5), 'std': (0.25, 0.25, 0.25)}


def raw_batch(n=4, size=32, hw=((40, 20), (20, 40), (30, 30), (10, 50))):
  rng = np.random.default_rng(0)
  return {'image': rng.integers(0, 256, (n, size, size, 3), np.uint8), 'image_hw': np.asarray(hw[:n], np.int32),
          'category': np.array([2, -1, 0, 1][:n]), 'attributes': rng.integers(0, 2, (n, 5)).astype(np.uint8),
          'has_attributes': np.array([1, 1, 0, 1][:n], np.uint8), 'index': np.arange(n),
          'weight': np.ones(n, np.float32)}


def test_short_side_crop_boxes_and_resize():
  # A 40x20 (h x w) original stored at 32x32: its 20x20 square is 16 rows x 32 columns of the stored image.
  boxes = augment.short_side_boxes(np.array([[40, 20], [20, 40], [30, 30]]), (32, 32), None)
  np.testing.assert_allclose(boxes, [[8, 0, 16, 32], [0, 8, 32, 16], [0, 0, 32, 32]])
  rnd = augment.short_side_boxes(np.tile([[40, 20]], (200, 1)), (32, 32), np.random.default_rng(0))
  assert np.all(rnd[:, 2:] == [16, 32]) and rnd[:, 0].min() < 1 and rnd[:, 0].max() > 15 and np.all(rnd[:, 1] == 0)
  images = np.random.default_rng(1).random((3, 32, 32, 3)).astype(np.float32)
  crop_resize = jax.jit(augment.crop_resize, static_argnums=2)
  whole = crop_resize(images, np.tile([[0, 0, 32, 32]], (3, 1)), 32)
  np.testing.assert_allclose(whole, images, atol=1e-6)                        # the whole image: unchanged
  part = crop_resize(images, np.tile([[8, 4, 16, 16]], (3, 1)), 16)
  np.testing.assert_allclose(part, images[:, 8:24, 4:20], atol=1e-6)          # same size: an exact cut


class Pooled(nnx.Module):
  """A stand-in backbone (one linear layer on the mean colour): the heads start with zero kernels, so the
  initial losses do not depend on the backbone, and this one costs nothing to build."""
  feature_names = ('pooled',)
  output_name = 'pooled'

  def __init__(self, rngs):
    self.dense = nnx.Linear(3, 4, rngs=rngs)

  def __call__(self, x, *, train=False, rng=None):  # pylint: disable=unused-argument
    return {'pooled': self.dense(x.mean(axis=(1, 2)))}


def test_transform_weights_and_heads():
  task = CategoryAttributes(num_classes=3, num_attributes=5, **STATS, crop_size=24,
                            attribute_frequency=(0.5, 0.1, 0.01, 0.9, 0.3))
  out = task.transform(raw_batch(), np.random.default_rng(0), train=False)
  np.testing.assert_array_equal(out['category'], [2, 0, 0, 1])                 # -1 becomes 0 with weight 0
  np.testing.assert_array_equal(out['category_weight'], [1, 0, 1, 1])
  np.testing.assert_array_equal(out['attribute_weight'], [1, 1, 0, 1])         # no attribute labels: weight 0
  assert task.backbone_input_shape((32, 32, 3)) == (24, 24, 3)
  # The attribute bias starts at the training log-odds: sigmoid(bias) = frequency ('none'), 1/2 ('balanced').
  np.testing.assert_allclose(jax.nn.sigmoid(task.initial_attribute_bias()), task.frequencies(), rtol=1e-5)
  balanced = CategoryAttributes(num_classes=3, num_attributes=5, **STATS, pos_weight='balanced',
                                attribute_frequency=(0.5, 0.1, 0.01, 0.9, 0.3))
  np.testing.assert_allclose(balanced.positive_weights(), [1, 9, 50, 1 / 9, 7 / 3], rtol=1e-5)   # 99 capped at 50
  np.testing.assert_allclose(np.asarray(jax.nn.sigmoid(balanced.initial_attribute_bias()))[[0, 1, 3, 4]], 0.5,
                             atol=1e-6)

  rngs = nnx.Rngs(0)
  backbone = Pooled(rngs)
  head = task.make_head(backbone, (32, 32, 3), rngs)
  outputs = nnx.jit(lambda b, h, x: task.forward(b, h, x, train=False, rng=None))(backbone, head, out)
  assert outputs['category'].shape == (4, 3) and outputs['attributes'].shape == (4, 5)
  loss, metrics = task.loss(outputs, out)
  metrics = {k: metric_mean(v) for k, v in metrics.items()}  # category metrics are (total, count) pairs
  # Zero kernels: every category equally likely, every attribute at its prior.
  f = task.frequencies()
  prior_bce = -np.mean(out['attributes'] * np.log(f) + (1 - out['attributes']) * np.log(1 - f), axis=1)
  assert metrics['category_loss'] == pytest.approx(np.log(3), rel=1e-5)
  assert metrics['attribute_loss'] == pytest.approx(prior_bce[[0, 1, 3]].mean(), rel=1e-5)
  assert float(loss) == pytest.approx(float(metrics['category_loss'] + metrics['attribute_loss']), rel=1e-6)

  attr_only = CategoryAttributes(num_classes=0, num_attributes=5, **STATS, category_weight=3.0, crop_size=24)
  head = attr_only.make_head(backbone, (24, 24, 3), rngs)
  batch = attr_only.transform(raw_batch(), np.random.default_rng(0), train=True)
  outputs = nnx.jit(lambda b, h, x: attr_only.forward(b, h, x, train=False, rng=None))(backbone, head, batch)
  assert set(outputs) == {'attributes'}
  _, metrics = attr_only.loss(outputs, batch)
  assert 'category_loss' not in metrics and 'top1' not in metrics


# ------------------------------------------------------------------------------------- train, then predict


def small_config(variant, source_dir, data_dir):
  c = deepfashion_multitask.get_config(f'{variant},quick')
  c.data.source_dir, c.data.data_dir, c.data.image_size = str(source_dir), str(data_dir), 32
  c.model.name, c.model.options = 'cifarnet', {'dropout': 0.0}
  c.tasks.multitask.crop_size = 32
  c.batch_size, c.eval_batch_size = 8, 16
  c.total_steps, c.eval_every, c.checkpoint_every, c.log_every = 3, 3, 3, 1
  return c


def read_csv(path):
  with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def test_short_run_on_the_real_sample_then_predict(deepfashion_sample, tmp_path):
  config, workdir = small_config('sample', deepfashion_sample, tmp_path / 'tfds'), str(tmp_path / 'run')
  summary = loop.train_and_evaluate(config, workdir)
  assert summary['finished'] and 0 < summary['eval']['multitask/threshold'] < 1
  with open(os.path.join(workdir, 'attributes_test_step3.json'), encoding='utf-8') as f:
    report = json.load(f)
  assert report['attribute_count'] == 35 and len(report['per_attribute_f1']) == 26
  for key in ('macro_f1', 'mean_sample_f1', 'micro_f1', 'top3_recall', 'top5_recall'):
    assert 0 <= report[key] <= 1 and summary['eval'][f'multitask/test/{key}'] == report[key]
  with open(os.path.join(workdir, 'thresholds.json'), encoding='utf-8') as f:
    saved = json.load(f)
  assert saved['step'] == 3 and saved['split'] == 'val' and saved['per_attribute'] is None
  assert mt_eval.saved_thresholds(workdir, 3, 'threshold') == saved         # what predict reuses
  assert mt_eval.saved_thresholds(workdir, 4, 'threshold') is None          # another checkpoint: chosen again

  # Predict with per-attribute thresholds: none saved for that rule, so they are chosen on val now.
  config.multitask.per_attribute_threshold = True
  os.remove(os.path.join(workdir, 'thresholds.json'))
  result = modes.predict_checkpoint(config, workdir)
  assert result['count'] == 35 and set(result['files']) == {'attribute'}   # no categories: no category.csv
  per = np.asarray(result['thresholds']['per_attribute'], np.float32)
  assert per.shape == (26,) and result['thresholds']['threshold'] == saved['threshold']
  g = result['outputs']
  # The restored checkpoint is the model the training run scored: same test F1 at the same global threshold.
  assert float(am.mean_sample_f1(g['attribute_probs'] >= saved['threshold'], g['attributes'])) == \
      pytest.approx(report['mean_sample_f1'], abs=1e-6)

  header, rows = read_csv(result['files']['attribute'])
  assert header == ['file_path', 'attribute_label']
  paths = [r['file_path'].decode() for r in sources.read_records(
      datasets.load_split(datasets.get_dataset('deepfashion_attr', config.data), 'test', config.data), range(35))]
  assert [r[0] for r in rows] == paths and paths[0] == 'img/00009.jpg'     # the test split: i % 10 == 9
  assert [[int(a) for a in r[1].split()] for r in rows] == \
      [np.flatnonzero(p >= per).tolist() for p in g['attribute_probs']]

  # multitask.decision=group_argmax (the sample's 6 groups are mutually exclusive): every image gets exactly one
  # attribute per group, the most probable of its group.
  config.multitask.decision, config.multitask.per_attribute_threshold = 'group_argmax', False
  result = modes.predict_checkpoint(config, workdir)
  assert result['thresholds']['decision'] == 'group_argmax'
  _, rows = read_csv(result['files']['attribute'])
  ends = np.cumsum(GROUP_SIZES)
  probs = result['outputs']['attribute_probs']
  for row, p in zip(rows, probs):
    chosen = [int(a) for a in row[1].split()]
    assert chosen == [int(start + np.argmax(p[start:end])) for start, end in zip(ends - GROUP_SIZES, ends)]


def test_benchmark_layout_run_then_predict_numbers_categories_as_its_files(tmp_path):
  """The benchmark layout as unpacked from Img/img.zip (images under Img/img/), prepared with bounding-box crops,
  trained 2 steps with non-1 loss weights and pos_weight='sqrt', then --mode=predict: category.csv names each
  test image's category by the benchmark's own 1-based numbering (the line of Anno/list_category_cloth.txt)."""
  root = tmp_path / 'benchmark'
  truth = make_benchmark(root)
  (root / 'Img').mkdir()
  (root / 'img').rename(root / 'Img' / 'img')        # Img/img/<product>/img_*.jpg, the lists unchanged
  config, workdir = small_config('benchmark', root, tmp_path / 'tfds'), str(tmp_path / 'run')
  config.data.crop_bbox, config.data.image_format = True, 'png'
  config.tasks.multitask.update({'category_weight': 2.0, 'attribute_weight': 0.5, 'pos_weight': 'sqrt'})
  config.batch_size, config.eval_batch_size, config.total_steps, config.eval_every = 4, 4, 2, 2
  config.checkpoint_every = 2

  # Prepared from Img/img/, each image its bounding box (x1, y1, x2, y2) resized: exact, as PNG.
  info = datasets.get_dataset('deepfashion', config.data)
  assert info.category_base == 1
  train = sources.read_records(datasets.load_split(info, 'train', config.data), range(2))
  for r, t in zip(train, truth):
    x1, y1, x2, y2 = t['bbox']
    assert r['file_path'].decode() == t['path'] and tuple(r['image_hw']) == (y2 - y1, x2 - x1)
    whole = root / 'Img' / t['path']
    np.testing.assert_array_equal(r['image'], deepfashion.load_image(whole, 32, t['bbox'])[0])
    assert not np.array_equal(r['image'], deepfashion.load_image(whole, 32)[0])

  summary = loop.train_and_evaluate(config, workdir)
  assert summary['finished']
  rows = [r for r in read_metrics(workdir) if r['split'] == 'train']
  assert len(rows) == 2
  for r in rows:   # loss = category_weight x cross-entropy + attribute_weight x BCE
    assert r['multitask/category_loss'] > 0 and r['multitask/attribute_loss'] > 0
    assert r['loss'] == pytest.approx(2.0 * r['multitask/category_loss'] + 0.5 * r['multitask/attribute_loss'],
                                      rel=1e-5)

  result = modes.predict_checkpoint(config, workdir)
  assert set(result['files']) == {'category', 'attribute'}
  header, rows = read_csv(result['files']['category'])
  assert header == ['file_path', 'category_label']
  assert [r[0] for r in rows] == [t['path'] for t in truth if t['split'] == 'test']
  listed = (root / 'Anno' / 'list_category_cloth.txt').read_text().splitlines()[2:]   # after count and header
  named = {str(line_no): line.split()[0] for line_no, line in enumerate(listed, start=1)}
  assert list(named.values()) == [n for n, _ in CATEGORIES]
  predicted = [info.class_names[c] for c in np.argmax(result['outputs']['category_logits'], axis=1)]
  assert [named[r[1]] for r in rows] == predicted


def test_prediction_files_parse_back(tmp_path):
  """Paths with commas survive (csv quoting); categories are written as given (the run numbers them: above),
  attributes 0-based, sorted."""
  paths = ['img/Floral_Dress/img_00000001.jpg', 'img/Shorts, Denim/img_00000002.jpg', 'img/x/img_3.jpg']
  logits = np.array([[0.1, 2.0, 0.3], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  decisions = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 1]])
  files = mt_eval.write_predictions(str(tmp_path), paths, np.argmax(logits, 1) + 1, decisions)
  header, rows = read_csv(files['category'])
  assert header == ['file_path', 'category_label'] and rows == [[p, c] for p, c in zip(paths, ['2', '1', '3'])]
  header, rows = read_csv(files['attribute'])
  assert header == ['file_path', 'attribute_label'] and rows == [[p, a] for p, a in zip(paths, ['0 3', '', '1 2 3'])]


def test_deepfashion_configs_pass_the_config_check():
  from configs import deepfashion_jigsaw, deepfashion_rotation  # pylint: disable=import-outside-toplevel
  from jaxssl.config_check import check_config  # pylint: disable=import-outside-toplevel
  for module in (deepfashion_multitask, deepfashion_rotation, deepfashion_jigsaw):
    for arg in ('', 'sample', 'csv', 'sample,quick', 'benchmark,quick'):
      check_config(module.get_config(arg))
  with pytest.raises(ValueError, match="it knows: benchmark, sample, csv"):
    deepfashion_multitask.get_config('sampel')
  bad = deepfashion_multitask.get_config('sample')
  bad.multitask.decision = 'argmax'
  with pytest.raises(ValueError, match="unknown multitask.decision 'argmax'"):
    check_config(bad)
