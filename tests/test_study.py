"""Label-efficiency study: stratified subsets, and a tiny study end to end on the real data."""

import csv
import json
import os

import ml_collections
import numpy as np

from conftest import small_config
from jaxssl import study
from jaxssl.data import subsets
from jaxssl.train import experiment
from jaxssl.train.checkpoint import Checkpointer


def test_stratified_subset_keeps_class_proportions_and_is_reproducible():
  labels = np.repeat(np.arange(5), [100, 200, 300, 50, 7])
  idx = subsets.stratified_subset(labels, 0.1, seed=3)
  assert np.bincount(labels[idx]).tolist() == [10, 20, 30, 5, 1]  # every class kept, at least one image
  assert len(set(idx.tolist())) == len(idx)
  np.testing.assert_array_equal(idx, subsets.stratified_subset(labels, 0.1, seed=3))
  assert not np.array_equal(idx, subsets.stratified_subset(labels, 0.1, seed=4))
  np.testing.assert_array_equal(subsets.stratified_subset(labels, 1.0, seed=0), np.arange(len(labels)))


def test_tiny_study_runs_every_cell_once_and_summarizes(tfds_dir, tmp_path):
  src = str(tmp_path / 'src')
  base = small_config(tfds_dir, **{'data.train_limit': 512, 'data.eval_limit': 100})
  ckpt = Checkpointer(os.path.join(src, 'checkpoints'), async_save=False)
  ckpt.save(0, experiment.build_experiment(small_config(tfds_dir, seed=7)).state)
  ckpt.close()
  base.study = ml_collections.ConfigDict({'fractions': (0.25,), 'seeds': (0,),
                                          'inits': {'pretext': src, 'scratch': ''}, 'epochs': 0.0,
                                          'min_steps': 2, 'metric': 'classify/top1'})
  workdir = str(tmp_path / 'study')
  rows = study.run_study(base, workdir)
  assert [(r['init'], r['seed']) for r in rows] == [('pretext', 0), ('scratch', 0)]
  assert all(r['step'] == 2 for r in rows)
  cell = os.path.join(workdir, 'cells', 'pretext_f0.25_s0')
  assert os.path.exists(os.path.join(cell, 'init_from.json'))
  assert not os.path.exists(os.path.join(workdir, 'cells', 'scratch_f0.25_s0', 'init_from.json'))
  with open(os.path.join(cell, 'config.json'), encoding='utf-8') as f:
    cfg = json.load(f)
  assert cfg['data']['train_fraction'] == 0.25 and cfg['data']['subset_seed'] == 0 and cfg['batch_size'] == 64
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    summary = json.load(f)['cells']
  assert [(s['init'], s['fraction'], s['n']) for s in summary] == [('pretext', 0.25, 1), ('scratch', 0.25, 1)]
  with open(os.path.join(workdir, 'results.csv'), encoding='utf-8') as f:
    assert len(list(csv.DictReader(f))) == 2
  assert os.path.exists(os.path.join(workdir, 'label_efficiency.png'))
  # Both inits trained on the same images, from different backbones.
  assert rows[0]['classify/top1'] != rows[1]['classify/top1'] or rows[0]['loss'] != rows[1]['loss']
  # A rerun trains nothing: every cell has its final_metrics.json.
  stamp = os.path.getmtime(os.path.join(cell, 'final_metrics.json'))
  assert study.run_study(base, workdir) == rows
  assert os.path.getmtime(os.path.join(cell, 'final_metrics.json')) == stamp


def test_summary_mean_and_std_over_seeds(tmp_path):
  rows = [{'init': 'a', 'fraction': 0.1, 'seed': s, 'classify/top1': v} for s, v in enumerate((0.5, 0.7))]
  rows.append({'init': 'b', 'fraction': 0.1, 'seed': 0, 'classify/top1': 0.4})
  study.write_results(rows, str(tmp_path), 'classify/top1')
  with open(tmp_path / 'results.json', encoding='utf-8') as f:
    cells = json.load(f)['cells']
  assert cells[0]['mean'] == 0.6 and abs(cells[0]['std'] - np.std([0.5, 0.7], ddof=1)) < 1e-12
  assert cells[1] == {'init': 'b', 'fraction': 0.1, 'n': 1, 'mean': 0.4, 'std': 0.0}
  assert (tmp_path / 'label_efficiency.png').exists()
