"""Label-efficiency study: stratified subsets, and a tiny study end to end on the real data."""

import csv
import json
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from conftest import small_config
from jaxssl import study
from jaxssl.data import subsets
from jaxssl.train import experiment, loop
from jaxssl.train.checkpoint import Checkpointer

REPO = pathlib.Path(__file__).resolve().parents[1]


def _backbone_run(workdir, kernel_shape=(3, 3, 1, 2)) -> str:
  """A run's checkpoint with a one-array backbone (a pretext run as init_from resolves and reads it), in a second."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(workdir, 'checkpoints', '0', 'state'),
               {'params': {'backbone': {'conv1': {'kernel': np.ones(kernel_shape, np.float32)}}}})
  return str(workdir)


def _study_config(data_dir, **study_keys):
  c = small_config(data_dir, **{'data.train_limit': 256, 'data.eval_limit': 64})
  c.study = ml_collections.ConfigDict({'fractions': (0.5,), 'seeds': (0,), 'subsets': 'random',
                                       'inits': {'scratch': ''}, 'epochs': 0.0, 'min_steps': 2,
                                       'metric': 'classify/top1', **study_keys})
  return c


def _no_training(monkeypatch):
  def train(*_):
    raise AssertionError('a cell trained')
  monkeypatch.setattr(loop, 'train_and_evaluate', train)


def _study_command(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', 'jaxssl.study', '--config', 'configs/fmnist_label_efficiency.py',
                         *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


def test_stratified_subset_keeps_class_proportions_and_is_reproducible():
  labels = np.repeat(np.arange(5), [100, 200, 300, 50, 7])
  idx = subsets.stratified_subset(labels, 0.1, seed=3)
  assert np.bincount(labels[idx]).tolist() == [10, 20, 30, 5, 1]  # every class kept, at least one image
  assert len(set(idx.tolist())) == len(idx)
  np.testing.assert_array_equal(idx, subsets.stratified_subset(labels, 0.1, seed=3))
  assert not np.array_equal(idx, subsets.stratified_subset(labels, 0.1, seed=4))
  np.testing.assert_array_equal(subsets.stratified_subset(labels, 1.0, seed=0), np.arange(len(labels)))


def test_kfold_folds_are_disjoint_stratified_and_fixed():
  labels = np.repeat(np.arange(3), [100, 40, 21])
  assert subsets.num_folds(labels, 0.1) == 10 and subsets.num_folds(labels, 0.5) == 2
  assert subsets.num_folds(labels, 0.3) == 3  # class 2: 21 // floor(6.3) = 3
  assert subsets.num_folds(np.repeat([0, 1], [23, 30]), 0.5) == 2  # 23 // 11
  folds = [subsets.labelled_subset(labels, 0.1, k, 'kfold') for k in range(10)]
  for fold in folds:
    assert np.bincount(labels[fold]).tolist() == [10, 4, 2]
  everything = np.concatenate(folds)
  assert len(set(everything.tolist())) == len(everything)  # disjoint
  # The same folds in every study (a fixed cut), unlike random subsets, which a seed redraws.
  np.testing.assert_array_equal(folds[3], subsets.stratified_fold(labels, 0.1, 3))
  # Random subsets of the same size do overlap across seeds; folds never do.
  a, b = (subsets.labelled_subset(labels, 0.1, s, 'random') for s in (0, 1))
  assert len(np.intersect1d(a, b)) > 0 and len(a) == len(folds[0])
  with pytest.raises(subsets.FoldError, match=r'only 2 disjoint stratified folds \(0..1\); use subset_seed < 2'):
    subsets.stratified_fold(labels, 0.5, 2)
  np.testing.assert_array_equal(subsets.stratified_fold(labels, 1.0, 0), np.arange(len(labels)))


def test_kfold_study_trains_each_fold_and_lists_the_cells_it_cannot_have(tfds_dir, tmp_path):
  # Seeds 1 and 2 (3 cells): 0.25 has 4 folds, so seed 2 trains there; 0.5 has 2, so seed 2 is skipped there.
  base = small_config(tfds_dir, **{'data.train_limit': 256, 'data.eval_limit': 64})
  base.study = ml_collections.ConfigDict({'fractions': (0.25, 0.5), 'seeds': (1, 2), 'subsets': 'kfold',
                                          'inits': {'scratch': ''}, 'epochs': 0.0, 'min_steps': 1,
                                          'metric': 'classify/top1'})
  workdir = str(tmp_path / 'study')
  rows = study.run_study(base, workdir)
  assert [(r['fraction'], r['seed']) for r in rows] == [(0.25, 1), (0.25, 2), (0.5, 1)]
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    results = json.load(f)
  assert results['subsets'] == 'kfold'
  assert [(s['fraction'], s['seed']) for s in results['skipped']] == [(0.5, 2)]
  # The two folds of 0.5 are disjoint halves of the 256 records: the trained cell's (seed 1) and, built from its
  # config, seed 0's; the two folds of 0.25 trained are disjoint quarters.
  picked = {}
  for fraction, seed in ((0.25, 1), (0.25, 2), (0.5, 1)):
    name = f'scratch_f{fraction:g}_s{seed}'
    with open(os.path.join(workdir, 'cells', name, 'config.json'), encoding='utf-8') as f:
      cfg = ml_collections.ConfigDict(json.load(f))
    assert cfg.data.subset_mode == 'kfold' and cfg.data.subset_seed == seed
    picked[fraction, seed] = experiment.build_experiment(cfg).train_source.indices
  cfg.data.subset_seed = 0
  picked[0.5, 0] = experiment.build_experiment(cfg).train_source.indices
  assert len(np.intersect1d(picked[0.5, 0], picked[0.5, 1])) == 0
  assert len(np.intersect1d(picked[0.25, 1], picked[0.25, 2])) == 0


def test_tiny_study_runs_every_cell_once_and_summarizes(tfds_dir, tmp_path):
  src = str(tmp_path / 'src')
  base = small_config(tfds_dir, **{'data.train_limit': 512, 'data.eval_limit': 100})
  ckpt = Checkpointer(os.path.join(src, 'checkpoints'), async_save=False)
  src_state = experiment.build_experiment(small_config(tfds_dir, seed=7)).state
  ckpt.save(0, src_state)
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
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:   # scratch: the init of no backbone
    pair = json.load(f)['paired']
  assert pair['reference'] == 'scratch' and abs(pair['cells'][0]['mean'] - (rows[0]['classify/top1'] -
                                                                            rows[1]['classify/top1'])) < 1e-12
  with open(os.path.join(workdir, 'results.csv'), encoding='utf-8') as f:
    assert len(list(csv.DictReader(f))) == 2
  assert os.path.exists(os.path.join(workdir, 'label_efficiency.png'))
  # Both inits train on the same images, from different backbones: the pretext cell starts from the source
  # checkpoint's backbone, the scratch cell from its own random one.
  built = {}
  for init in ('pretext', 'scratch'):
    with open(os.path.join(workdir, 'cells', f'{init}_f0.25_s0', 'config.json'), encoding='utf-8') as f:
      built[init] = experiment.build_experiment(ml_collections.ConfigDict(json.load(f)))
  np.testing.assert_array_equal(built['pretext'].train_source.indices, built['scratch'].train_source.indices)
  assert abs(len(built['pretext'].train_source) - 128) <= 5  # a quarter of the 512 records, rounded per class
  source_kernel = np.asarray(src_state.params['backbone']['conv1']['kernel'])
  np.testing.assert_array_equal(np.asarray(built['pretext'].state.params['backbone']['conv1']['kernel']),
                                source_kernel)
  assert not np.array_equal(np.asarray(built['scratch'].state.params['backbone']['conv1']['kernel']), source_kernel)
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


def test_each_init_is_paired_with_scratch_on_the_same_subsets(tmp_path):
  """results.json pairs each init's cells with the scratch init's on the same (fraction, seed): per seed the
  difference, its mean and std over the seeds both have (a seed scratch lacks is left out); results.md tables
  mean +- std with the mean difference; label_efficiency.png gains the differences' panel (wider)."""
  vals = {('a', 0.01): (0.70, 0.72, 0.75), ('scratch', 0.01): (0.65, 0.70), ('a', 0.1): (0.85, 0.86, 0.87),
          ('scratch', 0.1): (0.84, 0.85, 0.90)}
  rows = [{'init': i, 'fraction': f, 'seed': seed, 'classify/top1': v} for (i, f), vs in vals.items()
          for seed, v in enumerate(vs)]
  study.write_results(rows, str(tmp_path), 'classify/top1', reference='scratch')
  with open(tmp_path / 'results.json', encoding='utf-8') as f:
    paired = json.load(f)['paired']
  assert paired['reference'] == 'scratch' and [(p['init'], p['fraction'], p['n']) for p in paired['cells']] == [
      ('a', 0.01, 2), ('a', 0.1, 3)]
  one = paired['cells'][0]
  assert {k: round(v, 6) for k, v in one['per_seed'].items()} == {'0': 0.05, '1': 0.02}
  assert abs(one['mean'] - 0.035) < 1e-9 and abs(one['std'] - np.std([0.05, 0.02], ddof=1)) < 1e-9
  assert abs(paired['cells'][1]['mean'] - (0.01 + 0.01 - 0.03) / 3) < 1e-9
  lines = (tmp_path / 'results.md').read_text(encoding='utf-8').splitlines()
  assert lines[0] == '| init | 1% | 10% |'
  assert lines[2] == '| a | 72.3 +- 2.5 (+3.5) | 86.0 +- 1.0 (-0.3) |'
  assert lines[3] == '| scratch | 67.5 +- 3.5 [n=2] | 86.3 +- 3.2 |'
  assert 'mean difference from scratch on the same subsets, in points' in lines[5]
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(tmp_path / 'label_efficiency.png') as im:
    wide = im.size[0]
  (tmp_path / 'alone').mkdir()
  study.write_results(rows, str(tmp_path / 'alone'), 'classify/top1')   # no reference: one panel, no pairs
  with Image.open(tmp_path / 'alone' / 'label_efficiency.png') as im:
    assert wide > 1.8 * im.size[0]
  with open(tmp_path / 'alone' / 'results.json', encoding='utf-8') as f:
    assert json.load(f)['paired'] is None
  assert '(+' not in (tmp_path / 'alone' / 'results.md').read_text(encoding='utf-8')
  # A loss is no fraction: as logged, not in %; the split named is the one the cells were scored on.
  losses = [{**r, 'classify/loss': 1 - r['classify/top1']} for r in rows]
  study.write_results(losses, str(tmp_path / 'alone'), 'classify/loss', reference='scratch', split='val')
  lines = (tmp_path / 'alone' / 'results.md').read_text(encoding='utf-8').splitlines()
  assert lines[2] == '| a | 0.277 +- 0.025 (-0.035) | 0.140 +- 0.010 (+0.003) |'
  assert lines[5].startswith('classify/loss (as logged, val split)') and 'in its units' in lines[5]
  # The reference: the init of no backbone; the one named scratch where several are ('' sorted first by name).
  assert study.reference_init(ml_collections.ConfigDict({'a': '', 'rotation': 'r', 'scratch': ''})) == 'scratch'
  assert study.reference_init({'rotation': 'r', 'random': ''}) == 'random'
  assert study.reference_init({'rotation': 'r'}) is None


def test_a_labelled_subset_of_unlabelled_records_is_one_clear_error():
  from jaxssl import cli  # pylint: disable=import-outside-toplevel
  from jaxssl.data import datasets  # pylint: disable=import-outside-toplevel
  from jaxssl.eval import features  # pylint: disable=import-outside-toplevel
  unlabelled = [{'image': np.zeros((4, 4, 1), np.uint8), 'index': i} for i in range(3)]
  with pytest.raises(datasets.NoLabelsError, match=r'labelled subset .* needs class labels.*use a labelled dataset'):
    subsets.source_labels(unlabelled)
  with pytest.raises(datasets.NoLabelsError, match=r'^k-NN .* needs class labels'):
    features._labels({'image': np.zeros((2, 4, 4, 1))})  # pylint: disable=protected-access
  assert datasets.NoLabelsError in cli.one_line_errors()
  np.testing.assert_array_equal(subsets.source_labels([{'label': 3}, {'label': 1}]), [3, 1])


def test_fold_plan_counts_the_folds_each_fraction_has_and_names_a_bad_mode():
  records = [{'label': c} for c in (0,) * 40 + (1,) * 23]   # 0.5 of 23: two folds of 11; 0.1: 40 // 4 = 10 folds
  folds, sizes = subsets.fold_plan(records, (0.5, 0.1), 'kfold', 'study.subsets')
  assert folds == {0.5: 2, 0.1: 10} and sizes == {0.5: 20 + 11, 0.1: 4 + 2}
  # Random subsets: no folds, and the size every seed's subset has (per class round(f x count): 12 of 23 at 0.5).
  assert subsets.fold_plan(records, (0.5, 0.1), 'random', 'study.subsets') == ({}, {0.5: 20 + 12, 0.1: 4 + 2})
  labels = subsets.source_labels(records)
  assert {len(subsets.labelled_subset(labels, 0.5, seed)) for seed in range(5)} == {32}
  with pytest.raises(ValueError, match="benchmark.subsets='folds' must be one of: random, kfold"):
    subsets.fold_plan(records, (0.5,), 'folds', 'benchmark.subsets')


def test_a_prepared_splits_labels_are_read_once_per_process_until_it_is_prepared_again(tfds_dir, monkeypatch):
  from jaxssl.data import datasets  # pylint: disable=import-outside-toplevel
  c = small_config(tfds_dir)
  info = datasets.get_dataset(c.data.name, c.data)
  subsets._LABELS.clear()  # pylint: disable=protected-access
  first = subsets.source_labels(datasets.load_split(info, 'test', c.data))
  assert len(first) == 10000 and np.bincount(first).tolist() == [1000] * 10
  reads = []
  read = subsets._read_labels  # pylint: disable=protected-access
  monkeypatch.setattr(subsets, '_read_labels', lambda source: reads.append(1) or read(source))
  again = subsets.source_labels(datasets.load_split(info, 'test', c.data))   # another source object, same files
  np.testing.assert_array_equal(again, first)
  assert not reads
  again[:] = -1   # a caller's copy: the memo is not changed through it
  np.testing.assert_array_equal(subsets.source_labels(datasets.load_split(info, 'test', c.data)), first)
  prepared = [os.path.join(str(info.load('test', c.data).dataset_info.data_dir), f)
              for f in os.listdir(str(info.load('test', c.data).dataset_info.data_dir)) if '-test.array_record' in f]
  stat = os.stat(prepared[0])
  try:
    os.utime(prepared[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))   # the split prepared again: read anew
    np.testing.assert_array_equal(subsets.source_labels(datasets.load_split(info, 'test', c.data)), first)
    assert reads == [1]
  finally:
    os.utime(prepared[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_signal_during_a_cells_final_evaluation_stops_the_study_before_the_next_cell(tfds_dir, tmp_path):
  """SIGTERM that lands after a cell's last step (during its final evaluation) finishes that cell, which no step
  could stop, and stops the study before the next one with 143 (it used to go on, the signal lost); a rerun
  trains the rest. A real signal, sent by the process to itself from within the final evaluation."""
  workdir = tmp_path / 'study'
  script = (
      'import sys; sys.path.insert(0, %r)\n'
      'import ml_collections\n'
      'from conftest import SIGNAL_IN_FINAL_EVALUATION, small_config\n'
      'from jaxssl import study\n'
      'exec(SIGNAL_IN_FINAL_EVALUATION)   # eval_every=0: the first evaluation line is the final one\n'
      'c = small_config(%r, **{"data.train_limit": 256, "data.eval_limit": 64, "eval_every": 0})\n'
      'c.study = ml_collections.ConfigDict({"fractions": (0.5,), "seeds": (0, 1), "subsets": "random",\n'
      '    "inits": {"scratch": ""}, "epochs": 0.0, "min_steps": 2, "metric": "classify/top1"})\n'
      'study.run_study(c, sys.argv[1])\n'
      'print("study done")\n') % (str(REPO / 'tests'), tfds_dir)
  first = subprocess.run([sys.executable, '-c', script, str(workdir)], cwd=REPO, capture_output=True, text=True,
                         timeout=300, check=False)
  out = first.stdout + first.stderr
  assert first.returncode == loop.PREEMPTED_EXIT_CODE, out
  assert 'a stop was asked after the last step (signal 15); the run is finished' in out, out
  assert 'study stopped after cell scratch_f0.5_s0 (finished); rerun the same command to continue' in out, out
  assert (workdir / 'cells' / 'scratch_f0.5_s0' / 'final_metrics.json').exists()
  assert not (workdir / 'cells' / 'scratch_f0.5_s1').exists() and 'study done' not in out
  again = subprocess.run([sys.executable, '-c', script, str(workdir)], cwd=REPO, capture_output=True, text=True,
                         timeout=300, check=False, env={**os.environ, 'JAXSSL_TEST_SIGNALLED': '1'})   # no signal
  assert again.returncode == 0 and 'study done' in again.stdout, again.stdout + again.stderr
  assert (workdir / 'cells' / 'scratch_f0.5_s1' / 'final_metrics.json').exists()


def test_the_study_command_compiles_into_a_private_cache_that_a_second_process_reads(tfds_dir, tmp_path):
  """The study and benchmark commands keep XLA's compiled programs in $JAXSSL_CACHE_DIR/xla, a private folder: a
  second process running a study of the same shapes compiles nothing (every program a cache hit, as jax's own
  monitoring events count them); JAX_ENABLE_COMPILATION_CACHE=false turns it off and a folder that cannot be used
  is one line, the command going on without it."""
  cache = tmp_path / 'jaxssl_cache'
  cache.mkdir(mode=0o700)
  for lib in pathlib.Path(os.environ['JAXSSL_CACHE_DIR']).glob('libjaxssl_onednn_conv-*'):   # not built again
    shutil.copy2(lib, cache / lib.name)
  # Not the session's cache, nor its threshold (0.2 s): a program compiled in about that time, cached by one run and
  # not by the next (as load goes), would count as a miss. The command's own default caches every program.
  env = {k: v for k, v in os.environ.items()
         if k not in ('JAX_COMPILATION_CACHE_DIR', 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS')}
  env['JAXSSL_CACHE_DIR'] = str(cache)
  xla = cache / 'xla'
  # The command turns it on: a study that stops at its first cell (an init whose backbone is another model's, one
  # line when the cell loads it) has compiled the model's initialization into the folder by then.
  other = _backbone_run(tmp_path / 'other_model')
  done = subprocess.run([sys.executable, '-m', 'jaxssl.study', '--config', 'configs/fmnist_label_efficiency.py',
                         '--workdir', str(tmp_path / 'command'), f'--config.data.data_dir={tfds_dir}',
                         f'--config.study.inits.rotation={other}'], cwd=REPO, capture_output=True,
                        text=True, timeout=300, check=False, env=env)
  assert done.returncode != 0 and 'error: backbone mismatch' in done.stderr.splitlines()[-1], done.stdout + done.stderr
  assert stat.S_IMODE(xla.stat().st_mode) == 0o700 and list(xla.iterdir())
  script = (
      'import sys; sys.path.insert(0, %r)\n'
      'import collections, jax, ml_collections\n'
      'from conftest import small_config\n'
      'from jaxssl import cli, study\n'
      'events = collections.Counter()\n'
      'jax.monitoring.register_event_listener(lambda event, **_: events.update([event.split("/")[-1]]))\n'
      'print("cache:", cli.use_compilation_cache())\n'
      'if sys.argv[1] == "-": sys.exit(0)\n'
      'c = small_config(%r, **{"data.train_limit": 256, "data.eval_limit": 64})\n'
      'c.study = ml_collections.ConfigDict({"fractions": (0.5,), "seeds": (0,), "subsets": "random",\n'
      '    "inits": {"scratch": ""}, "epochs": 0.0, "min_steps": 2, "metric": "classify/top1"})\n'
      'study.run_study(c, sys.argv[1])\n'
      'print("hits", events["cache_hits"], "misses", events["cache_misses"])\n') % (str(REPO / 'tests'), tfds_dir)

  def run(workdir):
    done = subprocess.run([sys.executable, '-c', script, workdir], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()[0], [int(n) for n in done.stdout.splitlines()[-1].split()[1::2]]

  said, (hits, misses) = run(str(tmp_path / 'first'))
  assert said == f'cache: {xla}' and misses > 0
  said, (hits, misses) = run(str(tmp_path / 'second'))
  assert (hits, misses) == (hits, 0) and hits > 0   # every program read from the cache, none compiled anew
  off = subprocess.run([sys.executable, '-c', script, '-'], cwd=REPO, capture_output=True, text=True, timeout=300,
                       check=True, env={**env, 'JAX_ENABLE_COMPILATION_CACHE': 'false'})
  assert off.stdout == 'cache: None\n', off.stdout + off.stderr
  xla.chmod(0o777)   # others could plant a program there: refused in one line, the command goes on without it
  done = subprocess.run([sys.executable, '-c', script, '-'], cwd=REPO, capture_output=True, text=True, timeout=300,
                        check=False, env=env)
  assert done.returncode == 0 and done.stdout == 'cache: None\n', done.stdout + done.stderr
  assert f'warning: no XLA compilation cache (each run compiles its steps anew): refusing the XLA compilation ' \
         f'cache {xla}: its mode 777 lets other users write to it' in done.stderr, done.stderr


@pytest.mark.parametrize('key,value,message', [
    ('fractions', (1.5,), r'--config.study.fractions=\(1.5,\): each must be in \(0, 1\], .* not 1.5$'),
    ('fractions', (0.0, 0.1, -2), r'--config.study.fractions=\(0.0, 0.1, -2\): each must be in .* not 0.0, -2$'),
    ('fractions', (), r'--config.study.fractions=\(\) must list at least 1 value'),
    ('seeds', (), r'--config.study.seeds=\(\) must list at least one value'),
    ('inits', {}, r'--config.study.inits is empty'),
    ('inits', {'scratch': '', 'r': 2026}, r"--config.study.inits: r=2026: an init is a path .* or '' for scratch$"),
], ids=['above_1', 'zero_and_negative', 'no_fraction', 'no_seed', 'no_init', 'init_not_a_path'])
def test_bad_study_values_are_refused_before_anything_is_read_or_written(tmp_path, monkeypatch, key, value,
                                                                          message):
  _no_training(monkeypatch)
  c = _study_config(str(tmp_path / 'no_data'), **{key: value})
  with pytest.raises(ValueError, match=message):
    study.check_study(c)
  with pytest.raises(ValueError, match=message):   # the data (not there) is never reached
    study.run_study(c, str(tmp_path / 'study'))
  assert not (tmp_path / 'study').exists()


def test_every_init_is_checked_before_the_first_cell_trains(tmp_path, monkeypatch):
  """A missing init listed after others used to stop the study only when its cells came, hours in, with advice to
  set --config.init_from, which the study overwrites per cell."""
  _no_training(monkeypatch)
  good = _backbone_run(tmp_path / 'pretext')
  c = _study_config(str(tmp_path / 'no_data'), inits={'pretext': good, 'scratch': ''})
  study.check_inits(c)   # resolves and reads as the cells will
  for inits, message in (
      ({'pretext': good, 'scratch': '', 'later': str(tmp_path / 'nowhere')},
       rf'^--config.study.inits.later={re.escape(str(tmp_path))}/nowhere: no checkpoint in '
       rf'{re.escape(str(tmp_path))}/nowhere/checkpoints; train that run first '
       r"\(the study config's docstring names the command that makes it\) or point "
       r'--config.study.inits.later=DIR at a trained workdir or one of its checkpoints/<step> folders$'),
      ({'scratch': '', 'tv': str(tmp_path / 'w.safetensors')},
       r'^--config.study.inits.tv=.*w.safetensors: no such weights file'),
      ({'empty': str(tmp_path)}, r'^--config.study.inits.empty=.*: no checkpoint in')):
    c = _study_config(str(tmp_path / 'no_data'), inits=inits)
    with pytest.raises(study.StudyError, match=message) as e:
      study.run_study(c, str(tmp_path / 'study'))
    assert 'config.init_from' not in str(e.value)
  c.init_step = 3   # the cells' init_step: a step the run does not have
  c.study.inits = {'pretext': good}
  with pytest.raises(study.StudyError, match=r'^--config.study.inits.pretext=.*: no checkpoint at step 3 .*\[0\]'):
    study.check_inits(c)
  assert not (tmp_path / 'study').exists()
  # An init whose cells are all finished needs no backbone: a rerun (another metric, the table again) goes on
  # after its run was moved away; a cell not finished brings the check back.
  c.init_step, c.study.inits = -1, {'gone': str(tmp_path / 'moved_away')}
  final = tmp_path / 'study' / 'cells' / study.cell_name('gone', 0.5, 0) / 'final_metrics.json'
  final.parent.mkdir(parents=True)
  final.write_text('{}')
  study.check_inits(c, str(tmp_path / 'study'))
  c.study.seeds = (0, 1)
  with pytest.raises(study.StudyError, match=r'^--config.study.inits.gone=.*moved_away: no checkpoint in'):
    study.check_inits(c, str(tmp_path / 'study'))


def test_the_study_command_says_a_bad_init_or_fraction_in_one_line_before_any_cell(tmp_path):
  """The command line: an init added by an override (study.inits is an open block) and missing is one line naming
  its key, exit 2, the earlier init's cells not trained; a bad fraction is a bad config, nothing written."""
  good = _backbone_run(tmp_path / 'pretext')
  done = _study_command('--workdir', str(tmp_path / 'study'), f'--config.study.inits.rotation={good}',
                        f'--config.study.inits.supervised={tmp_path / "nowhere"}')
  assert done.returncode == 2, done.stdout + done.stderr
  assert done.stderr.splitlines()[-1].startswith(
      f'error: --config.study.inits.supervised={tmp_path / "nowhere"}: no checkpoint in '), done.stderr
  assert 'train that run first' in done.stderr and '--config.init_from' not in done.stderr, done.stderr
  assert not (tmp_path / 'study' / 'cells').exists()
  done = _study_command('--workdir', str(tmp_path / 'study2'), '--config.study.fractions=(0.1, 1.5)')
  assert (done.returncode, done.stderr) == (2, 'error: bad config: --config.study.fractions=(0.1, 1.5): each must '
                                            'be in (0, 1], a share of the labelled training images (1.0 = all of '
                                            'them), not 1.5\n'), done.stderr
  assert not (tmp_path / 'study2').exists()


def test_a_metric_the_cells_lack_stops_the_study_after_its_first_cell_listing_theirs(generated_tfds_dir, tmp_path,
                                                                                      monkeypatch):
  """study.metric's names are the evaluators', known once a cell is done: a typo used to be a KeyError after every
  cell had trained. Now the first finished cell stops it, kept; the rerun with the right name trains the rest."""
  trained = []

  def train(c, workdir):
    trained.append(os.path.basename(workdir))
    os.makedirs(workdir)
    with open(os.path.join(workdir, 'final_metrics.json'), 'w', encoding='utf-8') as f:
      json.dump({'step': c.total_steps, 'split': 'test', 'classify/top1': 0.5, 'classify/loss': 1.5}, f)
    return {'finished': True, 'exit_code': 0, 'stop_asked': False}
  monkeypatch.setattr(loop, 'train_and_evaluate', train)
  c = _study_config(generated_tfds_dir, seeds=(0, 1), metric='classify/top_1')
  workdir = str(tmp_path / 'study')
  with pytest.raises(study.StudyError, match=re.escape(
      "--config.study.metric='classify/top_1' is not a metric of the cells (cell scratch_f0.5_s0 has: "
      'classify/loss, classify/top1): set --config.study.metric to one of them and rerun the same command')):
    study.run_study(c, workdir)
  assert trained == ['scratch_f0.5_s0']
  c.study.metric = 'classify/top1'
  assert [r['seed'] for r in study.run_study(c, workdir)] == [0, 1] and trained[1:] == ['scratch_f0.5_s1']
  assert os.path.exists(os.path.join(workdir, 'results.json'))


def test_results_with_a_cell_lacking_the_metric_keep_the_table_and_say_which_metrics_there_are(tmp_path):
  rows = [{'init': 'a', 'fraction': 0.1, 'seed': 0, 'step': 2, 'classify/top1': 0.5},
          {'init': 'a', 'fraction': 0.1, 'seed': 1, 'step': 2, 'knn/top1': 0.4}]
  with pytest.raises(study.StudyError, match=r"metric='classify/top1' is not a metric of the cells \(cell a_f0.1_s1 "
                                             r'has: knn/top1\)'):
    study.write_results(rows, str(tmp_path), 'classify/top1')
  with open(tmp_path / 'results.csv', encoding='utf-8') as f:
    assert len(list(csv.DictReader(f))) == 2
  assert not (tmp_path / 'results.json').exists()
