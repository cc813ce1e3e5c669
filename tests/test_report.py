"""Reports a person looks at: PCA embedding, first-conv filters, and the table across runs."""

import csv
import json
import os

import numpy as np
import pytest
from flax import nnx

from conftest import small_config
from configs import fmnist_supervised
from jaxssl import modes, report, trees
from jaxssl.eval import embedding, filters, plots
from jaxssl.eval.embedding import ProbeEmbedding
from jaxssl.eval.filters import Filters
from jaxssl.models import build_backbone
from jaxssl.train import experiment
from jaxssl.train.checkpoint import Checkpointer


def test_pca_recovers_a_line_and_orders_variance():
  rng = np.random.default_rng(0)
  direction = np.array([1.0, -2.0, 3.0]) / np.sqrt(14)
  t = rng.normal(size=200)
  x = 5.0 + t[:, None] * direction + 1e-6 * rng.normal(size=(200, 3))
  points, ratio, axes = embedding.pca(x, 2)
  np.testing.assert_allclose(axes[0], direction, atol=1e-5)  # signed: its largest entry (3) is positive
  np.testing.assert_allclose(points[:, 0], t - t.mean(), atol=1e-5)
  assert ratio[0] > 0.999999 and ratio[1] < 1e-9
  # Three independent axes of std 5, 2 and 0.5, rotated: found in that order with their variance shares.
  q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  x = (rng.normal(size=(4000, 3)) * [5.0, 2.0, 0.5]) @ q.T
  _, ratio, axes = embedding.pca(x, 3)
  np.testing.assert_allclose(np.abs(axes @ q), np.eye(3), atol=0.02)
  np.testing.assert_allclose(ratio, np.array([25, 4, 0.25]) / 29.25, atol=0.01)
  # More dimensions than points (flattened conv maps) goes through the Gram matrix: the same answer as an SVD.
  x = rng.normal(size=(30, 500)) * np.linspace(3, 0.1, 500)
  points, ratio, axes = embedding.pca(x, 2)
  u, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
  np.testing.assert_allclose(np.abs(points), np.abs(u[:, :2] * s[:2]), rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(ratio, s[:2] ** 2 / np.sum(s ** 2), rtol=1e-9)
  assert np.all(axes[np.arange(2), np.argmax(np.abs(axes), axis=1)] > 0)


def test_embedding_files(tmp_path):
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, 90)
  feats = np.eye(3, 8)[labels] + 0.01 * rng.normal(size=(90, 8))
  embedding.write_embedding(feats, labels, ['a', 'b', 'c'], str(tmp_path / 'emb'))
  with open(tmp_path / 'emb.csv', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 90 and rows[0].keys() == {'pc1', 'pc2', 'label', 'class'}
  assert [r['class'] for r in rows] == [['a', 'b', 'c'][y] for y in labels]
  assert (tmp_path / 'emb.png').stat().st_size > 0


@pytest.mark.parametrize('cin', [1, 3, 5])
def test_filter_grid_tiles_are_the_kernels_each_scaled_to_0_1(cin):
  kernel = np.random.default_rng(cin).normal(size=(5, 4, cin, 7))
  kernel[..., 6] = 0.25  # a constant kernel is drawn mid-grey
  grid = filters.filter_grid(kernel, pad=1)
  assert grid.shape == ((3 * 6 - 1), (3 * 5 - 1)) + ((3,) if cin == 3 else ())  # 7 tiles on a 3x3 grid
  for i in range(7):
    r, c = divmod(i, 3)
    tile = grid[r * 6:r * 6 + 5, c * 5:c * 5 + 4]
    k = kernel[..., i] if cin == 3 else kernel[..., i].mean(-1)
    if i == 6:   # the constant kernel: mid-grey, not a division by its zero range
      np.testing.assert_array_equal(tile, np.full(k.shape, 0.5))
    else:        # a random kernel: its own range stretched to [0, 1]
      np.testing.assert_allclose(tile, (k - k.min()) / (k.max() - k.min()), err_msg=f'tile {i}')
      assert tile.min() == 0.0 and tile.max() == pytest.approx(1.0)
  assert np.isnan(grid[5]).all() and np.isnan(grid[:, 4]).all()  # separators
  assert np.isnan(grid[12:, 5:]).all()  # the two unused places of the last row


def test_first_conv_is_the_one_that_sees_pixels():
  for name, options, want in (('cifarnet', {}, ('conv1',)), ('resnet20', {'width': 0.25}, ('stem_conv',)),
                              ('resnet50', {'width': 0.25}, ('stem_conv',))):
    # pylint: disable=cell-var-from-loop  # the lambda runs inside eval_shape, within this iteration
    backbone = nnx.eval_shape(lambda: build_backbone(name, input_shape=(32, 32, 3), rngs=nnx.Rngs(0), **options))
    # pylint: enable=cell-var-from-loop
    arrays = {path: np.full(v.shape, i, np.float32) for i, (path, v) in enumerate(
        trees.flat_paths(nnx.state(backbone, nnx.Param)).items())}
    path, kernel = filters.first_conv(arrays)
    assert path == want, name  # ResNet: 'stages' sort before 'stem_conv', yet the stem is first
    np.testing.assert_array_equal(kernel, arrays[(*want, 'kernel')])
  assert filters.first_conv({('fc', 'kernel'): np.zeros((3, 4))}) is None


# ---- The table across runs, on run folders written in the trainer's formats.

def _write_run(workdir, config, train_rows=(), eval_rows=(), final=None, files=None):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))  # as loop._write_config
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8') as f:  # as MetricWriter.write
    for row in [*train_rows, *eval_rows]:
      f.write(json.dumps(row) + '\n')
  if final is not None:
    with open(os.path.join(workdir, 'final_metrics.json'), 'w', encoding='utf-8') as f:
      json.dump(final, f, indent=2)
  for name, content in (files or {}).items():
    with open(os.path.join(workdir, name), 'w', encoding='utf-8') as f:
      json.dump(content, f, indent=2)


def _train_rows(steps, rate, batch):
  return [{'step': s, 'split': 'train', 'loss': 1.0 / s, 'classify/top1': 0.5, 'lr': 0.1, 'images_per_s': r,
           'epoch': s * batch / 1000} for s, r in zip(steps, rate)]


def _eval(step, top1, split='test'):
  return {'step': step, 'split': split, 'loss': 1 - top1, 'classify/loss': 1 - top1, 'classify/top1': top1,
          'classify/top5': 0.99}


def test_report_table_from_run_folders(tmp_path, capsys):
  runs = tmp_path / 'runs'
  sup = fmnist_supervised.get_config()
  sup.total_steps = 30
  # A finished run; its best evaluation came before the end; a later --mode=eval of step 30.
  _write_run(str(runs / 'supervised'), sup, _train_rows([10, 20, 30], [0.0, 100.0, 200.0], 256),
             [_eval(10, 0.8), _eval(20, 0.9), _eval(30, 0.85)],
             {'step': 30, 'split': 'test', 'loss': 0.15, 'classify/loss': 0.15, 'classify/top1': 0.85,
              'classify/top5': 0.99, 'classify/per_class_top1': {'T-shirt/top': 0.8}},
             {'eval_test_step30.json': {'step': 30, 'split': 'test', 'classify/top1': 0.86},
              'eval_test_step10.json': {'step': 10, 'split': 'test', 'classify/top1': 0.5}})
  plots.plot_curves(str(runs / 'supervised'))
  # A linear probe on 10% of the labels, from another run's checkpoint, stopped before its end.
  probe = fmnist_supervised.get_config()
  probe.total_steps, probe.init_from, probe.optim.trainable = 50, str(runs / 'supervised'), 'heads'
  probe.tasks.classify.update({'feature': 'conv2', 'pool': 'avg', 'freeze_backbone': True})
  probe.data.train_fraction, probe.data.subset_seed = 0.1, 2
  _write_run(str(runs / 'probe'), probe, _train_rows([10, 20], [50.0, 50.0], 256), [_eval(20, 0.7)],
             files={'init_from.json': {'checkpoint': str(runs / 'supervised' / 'checkpoints' / '30'), 'step': 30}})
  # A --mode=knn folder: only its knn_test.json.
  (runs / 'knn').mkdir()
  with open(runs / 'knn' / 'knn_test.json', 'w', encoding='utf-8') as f:
    json.dump({'split': 'test', 'feature': 'fc1', 'pool': 'avg', 'top1': 0.81, 'top5': 0.98, 'dataset':
               'fashion_mnist', 'model': 'cifarnet', 'backbone': {'checkpoint': str(runs / 'supervised' /
                                                                                   'checkpoints' / '30')}}, f)
  # Started, never evaluated; and a folder that is no run at all.
  _write_run(str(runs / 'starting'), sup, _train_rows([10], [10.0], 256))
  (tmp_path / 'notes').mkdir()
  out = str(tmp_path / 'report')

  assert report.main([str(runs), str(tmp_path / 'notes'), '--out', out]) == 0
  with open(os.path.join(out, 'summary.csv'), encoding='utf-8') as f:
    rows = {r['run']: r for r in csv.DictReader(f)}
  assert list(rows) == ['knn', 'probe', 'supervised']  # found below runs/, sorted
  s, p, k = rows['supervised'], rows['probe'], rows['knn']
  assert (s['dataset'], s['model'], s['tasks'], s['init'], s['trainable'], s['labels']) == (
      'fashion_mnist', 'cifarnet', 'classify', 'scratch', 'all', 'all')
  assert (s['steps'], s['status'], s['metric'], s['value']) == ('30', 'finished', 'classify/top1', '0.85')
  assert (s['best'], s['best_step']) == ('0.9', '20')
  assert (s['eval_test/step'], s['eval_test/classify/top1']) == ('30', '0.86')  # the latest --mode=eval
  assert s['classify/top5'] == '0.99' and 'classify/per_class_top1' not in s
  # Step time from the logged throughput: 10 steps of 256 at 100/s, 10 at 200/s (the compile row has rate 0).
  assert float(s['images_per_s']) == 200.0 and float(s['train_minutes']) == pytest.approx((25.6 + 12.8) / 60)
  assert (p['tasks'], p['init'], p['trainable'], p['labels']) == (
      'classify@conv2/avg frozen', 'supervised@30', 'heads', '10% (subset seed 2)')
  assert (p['status'], p['steps'], p['value'], p['best']) == ('unfinished (20/50)', '20', '0.7', '0.7')
  assert (k['mode'], k['tasks'], k['init'], k['metric'], k['value']) == (
      'knn', 'knn@fc1/avg', 'supervised@30', 'knn_test/top1', '0.81')
  assert k['knn_test/layer'] == 'fc1/avg' and k['dataset'] == 'fashion_mnist'

  with open(os.path.join(out, 'summary.md'), encoding='utf-8') as f:
    md = f.read()
  table = [line for line in md.splitlines() if line.startswith('|')]
  assert len(table) == 2 + 3 and all(line.count('|') == table[0].count('|') for line in table)
  assert '[curves](../runs/supervised/curves.png)' in md
  assert 'classify/top5' not in table[0]  # the markdown keeps accuracy-like metrics; the CSV has them all
  assert f"`{runs / 'starting'}`: no results" in md and 'training logged up to step 10' in md
  assert f"`{tmp_path / 'notes'}`: no config.json" in md
  assert os.path.getsize(os.path.join(out, 'summary.png')) > 0
  assert report.main([str(runs / 'supervised'), str(runs / 'knn'), '--metric', 'knn_test/top1', '--out', out]) == 0
  with open(os.path.join(out, 'summary.csv'), encoding='utf-8') as f:
    assert [(r['run'], r['value']) for r in csv.DictReader(f)] == [('supervised', ''), ('knn', '0.81')]
  # A --metric no run has: the report as it is, and a warning listing what they have.
  assert report.main([str(runs / 'supervised'), '--metric', 'classify/top_1', '--out', out]) == 0
  assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
      'warning: no run has --metric classify/top_1; their metrics: classify/loss, classify/top1')
  # No run to report (a started run that never evaluated, a folder of notes, a typo): one line, exit 2, nothing
  # written.
  empty = str(tmp_path / 'empty_report')
  assert report.main([str(runs / 'starting'), str(tmp_path / 'notes'), str(tmp_path / 'typo'), '--out', empty]) == 2
  assert not os.path.exists(empty)
  assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
      f"error: no run to report in {runs / 'starting'} {tmp_path / 'notes'} {tmp_path / 'typo'} (a run is a workdir")
  # --out a file: one line, exit 2, the file as it was.
  (tmp_path / 'a_file').write_text('mine')
  assert report.main([str(runs / 'supervised'), '--out', str(tmp_path / 'a_file')]) == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      f"error: cannot write the report into {tmp_path / 'a_file'}: File exists; give --out a folder it may write in")
  assert (tmp_path / 'a_file').read_text() == 'mine'


def test_probe_pictures_knn_embedding_and_report_filters_of_a_checkpoint(tfds_dir, tmp_path):
  """On a (random) CifarNet's checkpoint: --mode=knn writes embedding.png|csv; the report draws the checkpoint's
  first conv, the very kernel of the params; a linear-probe run's end writes filters.png and the probed layer's
  embedding. (That every training run writes filters.png is checked by test_train.)"""
  config = small_config(tfds_dir, **{'optim.trainable': 'heads', 'tasks.classify.freeze_backbone': True,
                                     'tasks.classify.feature': 'pool1', 'tasks.classify.pool': 'avg',
                                     'data.train_limit': 256, 'data.eval_limit': 100})
  exp = experiment.build_experiment(config)
  src = str(tmp_path / 'src')
  ckpt = Checkpointer(os.path.join(src, 'checkpoints'), async_save=False)
  ckpt.save(0, exp.state)
  ckpt.close()
  knn_config = config.copy_and_resolve_references()
  knn_config.mode, knn_config.knn.feature = 'knn', 'conv2'
  modes.evaluate_knn(knn_config, src)
  with open(os.path.join(src, 'embedding.csv'), encoding='utf-8') as f:
    points = list(csv.DictReader(f))
  assert len(points) == 100 and os.path.getsize(os.path.join(src, 'embedding.png')) > 0

  result = report.report([src], str(tmp_path / 'out'), filters=True)
  row, = result['rows']  # pylint: disable=unbalanced-tuple-unpacking  # asserts exactly one row
  assert (row['mode'], row['tasks'], row['metric']) == ('knn', 'knn@conv2/avg', 'knn_test/top1')
  assert [os.path.relpath(p, tmp_path) for p in row['pictures']] == [
      os.path.join('src', 'embedding.png'), os.path.join('out', 'filters', 'src', 'filters.png')]
  what, kernel = report.checkpoint_filters(src)
  assert what == 'conv1 at step 0'  # a knn folder has no config.json to name the model
  np.testing.assert_array_equal(kernel, np.asarray(exp.state.params['backbone']['conv1']['kernel'][...]))

  probe = str(tmp_path / 'probe')
  os.makedirs(probe)
  ctx = exp.eval_context(probe)
  for picture in (Filters(ctx), ProbeEmbedding(ctx)):  # what a linear-probe run draws at its end
    picture.run(exp.state, 'final')
  assert os.path.getsize(os.path.join(probe, 'filters.png')) > 0
  with open(os.path.join(probe, 'embedding.csv'), encoding='utf-8') as f:
    assert len(list(csv.DictReader(f))) == 100
