"""The benchmark command (jaxssl/benchmark.py) end to end on its :quick config and the real Fashion-MNIST: every
part runs once, the results are one table and two pictures, every init fine-tunes on the same subsets, and a
rerun does nothing that is done."""

import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs import fmnist_benchmark
from jaxssl import benchmark, benchmark_configs, benchmark_records as records, benchmark_tables
from jaxssl.config_check import check_config
from jaxssl.data import datasets, subsets
from jaxssl.data.sources import read_records
from jaxssl.eval import cached_probe
from jaxssl.runlog import WriteError
from jaxssl.train import experiment
from jaxssl.train.checkpoint import Checkpointer


REPO = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ('pool2', 'fc1')


def _quick(tfds_dir):
  c = fmnist_benchmark.get_config('quick')
  c.data.data_dir = tfds_dir
  c.benchmark.seeds = (0,)   # the quick look's two seeds cost twice the cells; one shows the machinery
  c.data.train_limit, c.data.eval_limit, c.eval_batch_size = 1000, 300, 300   # half the quick look's images
  c.benchmark.probe.layers = LAYERS   # two of the six layers, and fewer probe steps: the test's time
  c.benchmark.probe.min_steps = 150
  # Two values of the grid's first key, one of its second: selection shown on half the cells (the product of
  # several values per key: test_the_selection_grid_is_every_combination_of_its_keys_and_a_bad_grid_is_one_line).
  c.benchmark.select.grid = (('optim.backbone_lr_scale', (0.1, 1.0)), ('optim.grad_clip_norm', (1.0,)))
  c.evals.filters, c.evals.curves = {'enabled': False}, {'enabled': False}   # each cell's pictures: not tested here
  return c


def _json(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _counting_writes(bench):
  """`bench`, its results writes counted: (bench, the list each write appends its return to)."""
  writes = []

  def write_results():
    writes.append(benchmark.Benchmark.write_results(bench))
    return writes[-1]

  bench.write_results = write_results
  return bench, writes


def test_quick_benchmark_runs_every_part_once_and_a_rerun_skips_them(tfds_dir, tmp_path, capsys):
  workdir = str(tmp_path / 'bench')
  results = benchmark.run_benchmark(_quick(tfds_dir), workdir)
  # What is left, said at the start and after each init's parts: at the speed of its own finished parts.
  said = [line for line in capsys.readouterr().out.splitlines() if line.startswith('benchmark left')]
  assert said[0] == ('benchmark left: 1 pretext runs (time unknown until one is done), 2 probes + k-NN + lowshot '
                     '(time unknown until one is done), 60 fine-tuning steps in 8 cells (time unknown until one is '
                     'done)'), said
  assert said[1].startswith('benchmark left: 1 probes + k-NN + lowshot (~') and 'steps in 8 cells (time unk' in said[1]
  rows = {r['init']: r for r in results['inits']}
  assert list(rows) == ['rotation', 'random']   # the scratch reference last
  layers = list(LAYERS)
  for row in rows.values():
    assert list(row['probe_layers']) == layers and row['best_layer'] in layers
    assert row['best_layer'] == max(layers, key=row['probe_layers_val'].get)   # chosen on validation
    assert 0.3 < row['probe_top1'] <= 1 and 0.3 < row['knn_top1'] <= 1
    assert set(row['finetune']) == {'0.05', '1'} and all(c['n'] == 1 for c in row['finetune'].values())
    assert all(row['wall_s'][p] for p in ('probe', 'knn', 'finetune'))
  assert rows['rotation']['pretext']['rotation/acc'] > 0.25 and rows['rotation']['wall_s']['pretrain']
  pretrain = _json(os.path.join(workdir, 'pretrain', 'rotation', 'config.json'))
  assert (pretrain['total_steps'], pretrain['data']['train_limit'], pretrain['online_probe']['enabled'],
          pretrain['data']['holdout_fraction']) == (40, 1000, False, 0.1)   # not even pretext runs see val images
  # Selection: per init, a cell per combination of the grid (backbone lr scale x gradient clip) on subset 0, scored
  # on the validation images; the test cells (same subsets for both inits, the validation images held out) train
  # with the best one, 100% with 5%'s; equal scores go to the grid's first.
  grid = [(scale, 1.0) for scale in (0.1, 1.0)]
  for init in ('rotation', 'random'):
    val = {}
    for scale, clip in grid:
      d = os.path.join(workdir, 'finetune', 'select',
                       f'{init}_f0.05_s0_backbone_lr_scale={scale:g},grad_clip_norm={clip:g}')
      c = _json(os.path.join(d, 'config.json'))
      assert (c['data']['eval_split'], c['data']['holdout_fraction'], c['optim']['backbone_lr_scale'],
              c['optim']['grad_clip_norm']) == ('holdout', 0.1, scale, clip)
      val[scale, clip] = _json(os.path.join(d, 'final_metrics.json'))['classify/top1']
    chosen = max(grid, key=val.get)
    assert rows[init]['chosen'] == {'0.05': chosen, '1': chosen}
    for f in ('0.05', '1'):
      c = _json(os.path.join(workdir, 'finetune', 'cells', f'{init}_f{f}_s0', 'config.json'))
      assert (c['data']['eval_split'], c['data']['holdout_fraction'], c['optim']['backbone_lr_scale'],
              c['optim']['grad_clip_norm'], c['data']['train_fraction'], c['data']['subset_seed']) == \
          ('test', 0.1, *chosen, float(f), 0)
      assert c['init_from'] == ('' if init == 'random' else os.path.join(workdir, 'pretrain', 'rotation'))
  # Few labels, frozen features: a probe fitted on each fine-tuning subset, the very images of the cell (the subset
  # drawn from the training images less the validation ones, as the trainer draws it), at each probed layer of
  # benchmark.lowshot_layers (the config's pool1, pool2, fc1, fc2; this test probes pool2 and fc1), the layer chosen
  # on validation.
  c = _quick(tfds_dir)
  info = datasets.get_dataset(c.data.name, c.data)
  train, _ = subsets.load_sources(info, benchmark.cell_base(c).data)
  for init in ('rotation', 'random'):
    low = _json(os.path.join(workdir, 'probe', init, 'lowshot.json'))
    assert low['layers'] == list(LAYERS) and list(low['fractions']) == ['0.05']
    cell = low['fractions']['0.05']['0']
    assert set(cell['val_by_layer']) == set(LAYERS) and cell['layer'] == max(LAYERS, key=cell['val_by_layer'].get)
    assert 0.1 < cell['test_top1'] <= 1 and rows[init]['lowshot']['0.05']['n'] == 1
    assert rows[init]['lowshot']['0.05']['layers'] == [cell['layer']]
    features = os.path.join(workdir, 'probe', init, f"features_d{c.benchmark.probe.max_dim}")
    labels = cached_probe.load(features, 'train', 'labels')
    kept, _ = cached_probe.val_split(labels, 0.1, 0)
    mine = benchmark.lowshot_indices(labels, kept, 0.05, 0, 'random')
    theirs = train.indices[subsets.labelled_subset(subsets.source_labels(train), 0.05, 0)]
    assert cell['train_count'] == len(mine) and list(mine) == list(theirs)
  # The test cell on the selection subset at the chosen value is the selection cell's training, scored on the
  # test split: the same final metrics as a cell trained afresh with its config.
  cell = os.path.join(workdir, 'finetune', 'cells', 'rotation_f0.05_s0')
  chosen = rows['rotation']['chosen']['0.05']
  assert _json(os.path.join(cell, 'reused.json'))['trained_by'] == os.path.join(
      workdir, 'finetune', 'select', f'rotation_f0.05_s0_backbone_lr_scale={chosen[0]:g},grad_clip_norm={chosen[1]:g}')
  fresh = str(tmp_path / 'fresh')
  benchmark.loop_train(ml_collections.ConfigDict(_json(os.path.join(cell, 'config.json'))), fresh)
  assert _json(os.path.join(cell, 'final_metrics.json')) == _json(os.path.join(fresh, 'final_metrics.json'))
  assert not os.path.exists(os.path.join(workdir, 'finetune', 'cells', 'rotation_f1_s0', 'reused.json'))
  for name in ('results.md', 'results.csv', 'results.json', 'probe_layers.png', 'label_efficiency.png',
               'gain_over_scratch.png', 'filters.png', 'pretext_curves.png', 'timings.json', 'cpu_timings.json'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  # pretext_curves.png draws each pretext run (the random init has none) on its own task's metric.
  assert benchmark.Benchmark(_quick(tfds_dir), workdir).pretext_curves() == [('rotation', 'rotation/acc')]
  wall, cpu = _json(os.path.join(workdir, 'timings.json')), _json(os.path.join(workdir, 'cpu_timings.json'))
  assert set(cpu) == set(wall) and all(cpu[part] > 0 for part in cpu)
  with open(os.path.join(workdir, 'results.md'), encoding='utf-8') as f:
    md = f.read()
  assert '| random (scratch) |' in md and 'fine-tune 5%' in md and 'fine-tune 100%' in md
  assert ('in square brackets the optim.backbone_lr_scale, optim.grad_clip_norm chosen on the validation images '
          '(from {0.1, 1} x {1})') in md
  scratch = rows['random']['chosen']['0.05']
  assert f"[{scratch[0]:g}, {scratch[1]:g}] |" in next(line for line in md.splitlines() if 'random (scratch)' in line)
  with open(os.path.join(workdir, 'results.csv'), encoding='utf-8') as f:
    table = list(csv.DictReader(f))   # a column per grid key: the values chosen for each fraction
  assert [(t['ft0.05_chosen_backbone_lr_scale'], t['ft0.05_chosen_grad_clip_norm']) for t in table
          if t['init'] == 'random'] == \
      [(f'{scratch[0]:g}', f'{scratch[1]:g}')]
  # A rerun: nothing trained, extracted or probed again; the same table.
  done = [os.path.join(workdir, 'pretrain', 'rotation', 'final_metrics.json'),
          os.path.join(workdir, 'probe', 'random', 'probe.json'),
          os.path.join(workdir, 'probe', 'rotation', 'knn.json'),
          os.path.join(workdir, 'probe', 'random', 'lowshot.json'),
          os.path.join(workdir, 'finetune', 'cells', 'rotation_f1_s0', 'final_metrics.json')]
  stamps = [os.path.getmtime(p) for p in done]
  timings = _json(os.path.join(workdir, 'timings.json'))
  extractions = cached_probe.STATS['extractions']
  capsys.readouterr()
  rerun, writes = _counting_writes(benchmark.Benchmark(_quick(tfds_dir), workdir))
  again = rerun.run()
  assert 'benchmark: nothing left to do' in capsys.readouterr().out
  assert len(writes) == 2   # nothing made: once at the start and once at the end, not after each init
  assert [os.path.getmtime(p) for p in done] == stamps
  assert cached_probe.STATS['extractions'] == extractions
  assert _json(os.path.join(workdir, 'timings.json')) == timings
  assert again['inits'] == results['inits']
  # Each call says what measured it: results.md names the calls, the code and the machine.
  calls = again['calls']
  assert len(calls) == 2 and calls[0]['cores'] == os.cpu_count() and calls[0]['jax'] and calls[0]['devices']
  assert calls[0]['commit'] is None or len(calls[0]['commit']) == 40
  with open(os.path.join(workdir, 'results.md'), encoding='utf-8') as f:
    assert f"Measured by 2 calls of `{calls[0]['command']}`, the first started {calls[0]['started']}" in f.read()
  # A probe and a k-NN made before their files kept their settings (as the first full-scale run's) are taken as
  # made with today's: nothing made again, the settings written in.
  for name in ('features.json', 'knn.json'):
    path = os.path.join(workdir, 'probe', 'random', name)
    made = _json(path)
    del made['settings']
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(made, f)
  benchmark.run_benchmark(_quick(tfds_dir), workdir)
  assert [os.path.getmtime(p) for p in done] == stamps
  assert all('settings' in _json(os.path.join(workdir, 'probe', 'random', name))
             for name in ('features.json', 'knn.json'))
  # Another k-NN setting measures the k-NN again, and nothing else; the old one is kept in stale/.
  other = _quick(tfds_dir)
  other.benchmark.knn.k = int(other.benchmark.knn.k) - 1
  capsys.readouterr()
  rerun, writes = _counting_writes(benchmark.Benchmark(other, workdir))
  rerun.run()
  assert len(writes) == 4   # at the start, after each init's k-NN made again, at the end
  said = [line for line in capsys.readouterr().out.splitlines() if line.startswith('benchmark left')]
  assert re.match(r'benchmark left: 2 k-NN \(~\d+s each\) -> ~\d+s', said[0]), said   # what is made again: left
  assert [os.path.getmtime(p) for p in done if 'knn' not in p] == [s for p, s in zip(done, stamps) if 'knn' not in p]
  assert _json(os.path.join(workdir, 'probe', 'rotation', 'knn.json'))['settings']['k'] == other.benchmark.knn.k
  assert len([d for d in os.listdir(os.path.join(workdir, 'stale')) if d.startswith('knn-')]) == 2
  # A k-NN whose file kept no settings is judged by the k it names (measured with another: measured again); a
  # lowshot made with other settings (here its validation seed) moves to stale/ with its seconds and is fitted
  # again; nothing else is made again.
  def no_settings_other_k(made):
    del made['settings']
    return {**made, 'k': 7}

  def other_val_seed(made):
    return {**made, 'settings': {**made['settings'], 'val_seed': made['settings']['val_seed'] + 1}}

  def no_settings(made):   # a lowshot from before it kept them was standardized otherwise: fitted again
    del made['settings']
    return made

  edits = {os.path.join(workdir, 'probe', 'rotation', 'knn.json'): no_settings_other_k,
           os.path.join(workdir, 'probe', 'random', 'lowshot.json'): other_val_seed,
           os.path.join(workdir, 'probe', 'rotation', 'lowshot.json'): no_settings}
  for path, edit in edits.items():
    made = edit(_json(path))
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(made, f)
  lowshot_s = _json(os.path.join(workdir, 'timings.json'))['lowshot/random']
  stamps = [os.path.getmtime(p) for p in done]
  benchmark.run_benchmark(other, workdir)
  assert [os.path.getmtime(p) == s for p, s in zip(done, stamps)] == [True, True, False, False, True]
  assert _json(os.path.join(workdir, 'probe', 'rotation', 'knn.json'))['k'] == other.benchmark.knn.k
  assert _json(os.path.join(workdir, 'probe', 'random', 'lowshot.json'))['settings']['val_seed'] == \
      other.benchmark.val_seed
  assert len([d for d in os.listdir(os.path.join(workdir, 'stale')) if d.startswith('knn-')]) == 3
  (stale,) = [d for d in os.listdir(os.path.join(workdir, 'stale')) if d.startswith('lowshot-random-')]
  assert os.path.exists(os.path.join(workdir, 'stale', stale, 'probe', 'random', 'lowshot.json'))
  assert _json(os.path.join(workdir, 'stale', stale, 'timings.json')) == {'lowshot/random': lowshot_s}
  assert [d for d in os.listdir(os.path.join(workdir, 'stale')) if d.startswith('lowshot-rotation-')]
  assert 'settings' in _json(os.path.join(workdir, 'probe', 'rotation', 'lowshot.json'))
  # A lowshot from before its layer was chosen per subset (its settings name no layers; it names the one it fitted)
  # is fitted again. A lowshot layer that no probed layer is: one line, before anything moves.
  path = os.path.join(workdir, 'probe', 'random', 'lowshot.json')
  made = _json(path)
  del made['settings']['layers'], made['layers']
  made['layer'] = 'fc1'
  for cell in made['fractions']['0.05'].values():
    del cell['layer'], cell['val_by_layer']
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(made, f)
  lowshot_off = other.copy_and_resolve_references()
  lowshot_off.benchmark.lowshot = False   # such a record is kept then, and read into the table as it is
  assert {r['init']: r['lowshot'] for r in benchmark.Benchmark(lowshot_off, workdir).collect()['inits']}['random'] \
      == {'0.05': {**benchmark_tables.mean_std([made['fractions']['0.05']['0']['test_top1']]), 'layers': ['fc1']}}
  assert re.match(r'benchmark left: 1 lowshot probes \(~\d+s each\) -> ~\d+s',
                  benchmark.Benchmark(other, workdir).outlook())   # alone: not a probe + k-NN + lowshot
  misnamed = other.copy_and_resolve_references()
  misnamed.benchmark.lowshot_layers = ('fc3',)
  rotation_low = os.path.join(workdir, 'probe', 'rotation', 'lowshot.json')
  stamp = os.path.getmtime(rotation_low)
  with pytest.raises(benchmark.BenchmarkConfigError, match=(
      r"^benchmark.lowshot_layers: 'fc3' no layer of rotation's backbone \(conv1, pool1, conv2, pool2, fc1, fc2\); ")):
    benchmark.run_benchmark(misnamed, workdir)
  assert _json(path) == made and os.path.getmtime(rotation_low) == stamp
  capsys.readouterr()
  benchmark.run_benchmark(other, workdir)
  assert 'lowshot random: made with other settings (layers "the all-label probe\'s best (fc1)" -> [\'pool1\', ' \
      "'pool2', 'fc1', 'fc2'])" in capsys.readouterr().out
  assert _json(path)['layers'] == list(LAYERS) and os.path.getmtime(rotation_low) == stamp
  # A layer of the backbone that an init's probe does not measure (jigsaw's stops at pool2): every probed one.
  fallback = other.copy_and_resolve_references()
  fallback.benchmark.lowshot_layers = ('conv1',)
  benchmark.run_benchmark(fallback, workdir)
  assert ('benchmark lowshot random: its probe measures none of benchmark.lowshot_layers (conv1); every probed layer '
          'instead (pool2, fc1)') in capsys.readouterr().out
  assert _json(path)['layers'] == list(LAYERS) and _json(path)['settings']['layers'] == ['conv1']
  # Another probe setting (its L2 grid) makes each init's features, probe, k-NN and lowshot again (the old ones
  # moved to stale/), and nothing else.
  other.benchmark.probe.l2 = (1e-3,)
  benchmark.run_benchmark(other, workdir)
  assert [os.path.getmtime(p) for p in done if 'probe' not in p] == [s for p, s in zip(done, stamps)
                                                                    if 'probe' not in p]
  assert _json(os.path.join(workdir, 'probe', 'random', 'lowshot.json'))['settings']['probe']['l2'] == [1e-3]
  assert _json(os.path.join(workdir, 'probe', 'random', 'features.json'))['settings']['probe']['l2'] == [1e-3]
  assert sorted(d.split('-')[1] for d in os.listdir(os.path.join(workdir, 'stale')) if d.startswith('probe-')) == \
      ['random', 'rotation']
  # The random init is not pretrained: benchmark.retrain naming it is one line (it would do nothing).
  other.benchmark.retrain = ('random',)
  with pytest.raises(benchmark.BenchmarkConfigError, match=r"^benchmark.retrain: 'random' not pretrained here"):
    benchmark.Benchmark(other, workdir)
  # A finished pretext run trained with another config than the benchmark's now is one line, not silently kept;
  # benchmark.retrain moves it and every part made from it (with their seconds) to stale/, deleting nothing.
  changed = _quick(tfds_dir)
  changed.benchmark.pretrain_overrides.optim = {'lr': 0.5}
  with pytest.raises(benchmark.BenchmarkConfigError, match=(
      r"^pretrain/rotation was trained with another config than the benchmark trains now \(optim.lr 0.02 -> 0.5\): "
      r"add --config.benchmark.retrain=\"\('rotation',\)\" to move it")):
    benchmark.run_benchmark(changed, workdir)
  # A retrain whose new config the run's own check refuses stops before anything moves to stale/.
  refused = _with(changed, retrain=('rotation',))
  refused.benchmark.pretrain_overrides.checkpoint_every = -5
  stale_before = sorted(os.listdir(os.path.join(workdir, 'stale')))
  with pytest.raises(benchmark.BenchmarkConfigError, match=r"^pretrain/rotation \(.*\) with the benchmark's settings: "
                                                           r"--config.checkpoint_every=-5 must be positive"):
    benchmark.run_benchmark(refused, workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'stale'))) == stale_before
  assert os.path.exists(os.path.join(workdir, 'pretrain', 'rotation', 'final_metrics.json'))
  b = benchmark.Benchmark(changed, workdir)
  seconds = {p: s for p, s in b.ledger.seconds.items() if p.endswith('/rotation')}
  dest = b.set_aside('rotation')
  moved = sorted(os.path.relpath(os.path.join(d, n), dest) for d, dirs, _ in os.walk(dest) for n in dirs
                 if os.path.basename(d) in ('pretrain', 'probe', 'select', 'cells'))
  assert moved == ['finetune/cells/rotation_f0.05_s0', 'finetune/cells/rotation_f1_s0'] + \
      [f'finetune/select/rotation_f0.05_s0_backbone_lr_scale={s:g},grad_clip_norm={g:g}' for s, g in grid] + \
      ['pretrain/rotation', 'probe/rotation']
  assert _json(os.path.join(dest, 'timings.json')) == seconds and set(seconds) >= {'pretrain/rotation'}
  assert not any(p.endswith('/rotation') for p in _json(os.path.join(workdir, 'timings.json')))
  assert os.path.exists(os.path.join(workdir, 'finetune', 'cells', 'random_f1_s0', 'final_metrics.json'))
  assert not os.path.exists(b.pretrain_dir('rotation'))


def test_no_pretext_run_warms_up_for_most_of_its_budget():
  """With every pretext run cut to 3 epochs, SimCLR's and BYOL's 10 warmup epochs are cut to a fifth of the run
  (benchmark.max_warmup_share); a warmup that fits (rotation's 0.5) and each config's own schedule are kept."""
  c = fmnist_benchmark.get_config()
  c.benchmark.pretrain_epochs = 3.0
  warmups = {init: benchmark.pretrain_config(c, c.benchmark.inits[init]).optim.warmup_epochs
             for init in ('simclr', 'byol', 'rotation')}
  assert warmups == {'simclr': 0.6, 'byol': 0.6, 'rotation': 0.5}
  c.benchmark.pretrain_epochs = 0.0
  assert benchmark.pretrain_config(c, c.benchmark.inits['simclr']).optim.warmup_epochs == 10.0   # of 100 epochs


def test_every_fine_tuning_cell_warms_up_for_a_tenth_of_its_steps():
  """The recipe's 0.5-epoch warmup is 0 steps on 50 images (1 step an epoch) and 1 on 540: benchmark.warmup_share
  makes every cell warm up for at least a tenth of its steps (100%: 0.5 epoch is 105 of 1,055 steps, about
  that already)."""
  from jaxssl import study  # pylint: disable=import-outside-toplevel
  c = fmnist_benchmark.get_config()
  c.benchmark.epochs = 5.0
  base = benchmark.cell_base(c)
  for fraction, size, steps in ((0.001, 50, 200), (0.01, 540, 200), (0.1, 5400, 200), (1.0, 54000, 1055)):
    cell = study.cell_config(base, '', fraction, 0, 54000, 1, subset_size=size)
    per_epoch = max(1, size // cell.batch_size)
    assert cell.total_steps == steps
    assert int(cell.optim.warmup_epochs * per_epoch) >= int(0.1 * steps) and cell.optim.warmup_epochs >= 0.5
  base.study.warmup_share = 0.0   # a study without it keeps its recipe's warmup
  assert study.cell_config(base, '', 0.001, 0, 54000, 1, subset_size=50).optim.warmup_epochs == 0.5


def test_bad_inits_are_one_line(tmp_path):
  c = fmnist_benchmark.get_config('quick')
  with pytest.raises(benchmark.BenchmarkConfigError, match="init config 'configs/nope.py' not found"):
    benchmark.load_config('configs/nope.py:quick')
  c.benchmark.pretrain_overrides = {'optim': {'lrr': 0.1}}
  with pytest.raises(benchmark.BenchmarkConfigError, match=r"benchmark.pretrain_overrides.optim: the config has no "
                                                           r"key 'lrr'"):
    benchmark.pretrain_config(c, 'configs/fmnist_rotation.py:quick')
  c.benchmark.pretrain_overrides = {}
  c.benchmark.pretrain_epochs = 3.0
  capped = benchmark.pretrain_config(c, 'configs/fmnist_rotation.py:quick')
  assert (capped.num_epochs, capped.total_steps, capped.data.train_limit) == (3.0, 0, 2000)
  c.benchmark.inits['combination'] = 'configs/fmnist_rotation.py:quick'
  with pytest.raises(benchmark.BenchmarkConfigError, match="benchmark.inits: 'combination' is the name of the init "
                                                           "benchmark.combine adds"):
    benchmark.Benchmark(c, str(tmp_path))
  del c.benchmark.inits['combination']
  # A pretext run's config that its own check refuses (here through the benchmark's overrides) is one line naming
  # the run and where its keys are set, before anything trains.
  c.benchmark.pretrain_overrides = {'checkpoint_every': -5}
  with pytest.raises(benchmark.BenchmarkConfigError, match=(
      r"^pretrain/rotation \(configs/fmnist_rotation.py:quick\) with the benchmark's settings: "
      r"--config.checkpoint_every=-5 must be positive \(a pretext run's key is set with "
      r"--config.benchmark.pretrain_overrides\)$")):
    benchmark.Benchmark(c, str(tmp_path)).pretrain('rotation', '[1/2]')
  assert not os.path.exists(tmp_path / 'pretrain' / 'rotation' / 'checkpoints')   # nothing trained
  del c.benchmark.inits['random']
  with pytest.raises(benchmark.BenchmarkConfigError, match="benchmark.inits needs 'random'"):
    benchmark.Benchmark(c, str(tmp_path))


def test_only_runs_the_inits_it_names_and_scratch_beside_them(tmp_path, generated_tfds_dir):
  """benchmark.only: one task against scratch in a workdir of its own (a longer pretext budget, a new task) without
  the other inits' parts; the random init always runs (every comparison's reference); a name not among the inits is
  one line."""
  c = fmnist_benchmark.get_config()
  c.data.data_dir = generated_tfds_dir   # the outlook counts cells on the prepared images: these will do
  everything = benchmark.Benchmark(c, str(tmp_path / 'all'))
  assert list(everything.inits)[-1] == 'random' and len(everything.inits) == len(fmnist_benchmark.INITS)
  # The full benchmark's outlook in a new workdir counts every init and the combination to come (not chosen yet):
  # every init but random pretrains.
  n = len(fmnist_benchmark.INITS)
  assert everything.outlook().startswith(f'benchmark left: {n} pretext runs (time unknown until one is done), '
                                         f'{n + 1} probes + k-NN + lowshot'), everything.outlook()
  c.benchmark.only = ('simclr', 'byol')
  workdir = tmp_path / 'two'
  two = benchmark.Benchmark(c, str(workdir))
  assert list(two.inits) == ['byol', 'simclr', 'random']
  # No combination is chosen from the named inits (nor counted as to come): it is the full benchmark's choice.
  assert 'pretext runs' in two.outlook() and '3 pretext runs' not in two.outlook()
  two.choose_combination()
  assert not (workdir / 'combination.json').exists()
  with pytest.raises(benchmark.BenchmarkConfigError, match=r"^benchmark.only: no init named 'combination' in this "
                                                           r"workdir; .* \('combination' once a run of every init"):
    benchmark.Benchmark(_with(c, only=('simclr', 'combination')), str(workdir))
  (workdir / 'combination.json').write_text(json.dumps({'spec': 'configs/fmnist_simclr.py+configs/fmnist_byol.py'}))
  assert list(benchmark.Benchmark(c, str(workdir)).inits) == ['byol', 'simclr', 'random']
  c.benchmark.only = ('simclr', 'combination')
  assert list(benchmark.Benchmark(c, str(workdir)).inits) == ['simclr', 'combination', 'random']
  c.benchmark.only = ('simclr', 'sim_clr')
  with pytest.raises(benchmark.BenchmarkConfigError, match=r"^benchmark.only: no init named 'sim_clr' in this "
                                                           r"workdir; the inits are autoencoder, byol, .*, random \("):
    benchmark.Benchmark(c, str(tmp_path / 'bad'))
  c.benchmark.only, c.benchmark.retrain = ('simclr',), ('byol',)   # a retrain this run would never act on
  with pytest.raises(benchmark.BenchmarkConfigError, match=r"^benchmark.retrain: 'byol' not an init of this run; its "
                                                           r"inits are simclr, random$"):
    benchmark.Benchmark(c, str(tmp_path / 'bad'))


def _with(c, **benchmark_keys):
  c = c.copy_and_resolve_references()
  c.benchmark.update(benchmark_keys)
  return c


def test_the_validation_images_are_the_probes_and_no_training_run_sees_them(tfds_dir):
  """data.holdout_fraction takes out of training exactly the records the cached probe validates on (the same
  stratified draw), before the labelled subset; eval_split='holdout' evaluates on them."""
  c = fmnist_benchmark.get_config('quick')
  c.data.data_dir = tfds_dir
  info = datasets.get_dataset(c.data.name, c.data)
  every = subsets.source_labels(datasets.load_split(info, 'train', c.data, 2000))
  kept_idx, val_idx = cached_probe.val_split(every, 0.1, 0)
  per_class = np.bincount(every)
  assert np.array_equal(np.bincount(every[val_idx]), np.round(0.1 * per_class).astype(int))   # stratified
  assert len(kept_idx) + len(val_idx) == 2000 and not set(kept_idx) & set(val_idx)
  c.data.holdout_fraction, c.data.eval_split = 0.1, 'holdout'
  train, val = subsets.load_sources(info, c.data)
  assert list(train.indices) == list(kept_idx) and list(val.indices) == list(val_idx)
  # The labels they carry (so that the labelled subset reads no record again) are their records' labels.
  for part, idx in ((train, kept_idx), (val, val_idx)):
    read = [int(r['label']) for r in read_records(part, range(len(part)))]
    assert list(subsets.source_labels(part)) == read == list(every[idx])
  c.data.eval_split, c.data.train_fraction = 'test', 0.05
  exp = experiment.build_experiment(c, load_init=False)
  assert len(exp.eval_source) == 500   # the test split (eval_limit), untouched
  assert set(np.asarray(exp.train_source.source.indices)[exp.train_source.indices]) <= set(kept_idx)
  c.data.holdout_fraction = 0.0
  with pytest.raises(ValueError, match="eval_split='holdout' evaluates on the training images held out"):
    c.data.eval_split = 'holdout'
    check_config(c)


def test_a_backbone_that_did_not_transfer_whole_is_probed_up_to_its_first_fresh_layer():
  names = ['conv1', 'pool1', 'conv2', 'pool2', 'fc1', 'fc2']
  assert benchmark.transferred_layers(names, [], ['fc1/kernel']) == names[:4]
  assert benchmark.transferred_layers(names, ['conv2', 'fc2'], ['fc1/kernel']) == ['conv2']
  assert benchmark.transferred_layers(names, [], []) == names
  c = benchmark.downstream_config(fmnist_benchmark.get_config(), '/runs/jigsaw')
  assert (c.init_from, c.init_mismatched) == ('/runs/jigsaw', 'skip') and 'benchmark' not in c


def test_the_command_says_a_bad_init_in_one_line(tmp_path):
  config = str(REPO / 'configs/fmnist_benchmark.py')
  done = subprocess.run([sys.executable, '-m', 'jaxssl.benchmark', '--config', f'{config}:quick',
                         '--workdir', str(tmp_path / 'b'), '--config.benchmark.inits.rotation=configs/nope.py'],
                        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 2, done.stderr[-2000:]
  assert done.stderr.strip().splitlines()[-1].startswith("error: benchmark init config 'configs/nope.py' not found")
  done = subprocess.run([sys.executable, '-m', 'jaxssl.benchmark', '--config', config,
                         '--workdir', str(tmp_path / 'b'), '--config.data.holdout_fraction=1.5'],
                        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 2 and 'error: bad config: --config.data.holdout_fraction=1.5 must be in [0, 1)' in \
      done.stderr, done.stderr[-2000:]


def test_bad_fractions_and_a_file_for_workdir_stop_the_benchmark_before_it_writes(tmp_path):
  """Checked when the benchmark starts (not when fine-tuning does, after every pretext run and probe)."""
  config = fmnist_benchmark.get_config('quick')
  for key, value, message in (('fractions', (0.05, 1.5), r'--config.benchmark.fractions=\(0.05, 1.5\): each must be '
                                                         r'in \(0, 1\], .* not 1.5$'),
                              ('fractions', (), r'--config.benchmark.fractions=\(\) must list at least 1 value'),
                              ('select.fractions', (0.0,), r'--config.benchmark.select.fractions=\(0.0,\): each must '
                                                           r'be in \(0, 1\], .* not 0.0$'),
                              ('inits.r', 2026, r'benchmark.inits: r=2026: an init is a config file')):
    bad = config.copy_and_resolve_references()
    if key.startswith('inits.'):   # a new init, as the command line adds one
      bad.benchmark.inits[key.split('.')[1]] = value
    else:
      benchmark_configs.set_key(bad.benchmark, key, value, 'test')
    with pytest.raises(benchmark_configs.BenchmarkConfigError, match=message):
      benchmark.Benchmark(bad, str(tmp_path / 'b'))
  assert not (tmp_path / 'b').exists()
  (tmp_path / 'a_file').write_text('mine')
  with pytest.raises(WriteError, match='a_file: File exists .* a file stands where a folder is needed'):
    benchmark.Benchmark(config, str(tmp_path / 'a_file'))
  assert (tmp_path / 'a_file').read_text() == 'mine'


ROT, AE, DENOISE, JIG = ('configs/fmnist_rotation.py:quick', 'configs/fmnist_autoencoder.py:quick',
                         'configs/fmnist_autoencoder.py:masking,quick', 'configs/fmnist_jigsaw.py:quick')


def test_joined_configs_are_one_run_of_all_their_tasks_and_a_clash_is_one_line():
  joined = benchmark.load_config(f'{ROT}+{AE}')
  rot, ae = benchmark.load_config(ROT), benchmark.load_config(AE)
  assert list(joined.tasks) == ['autoencoder', 'rotation'] and benchmark.is_config_spec(f'{ROT}+{AE}')
  assert joined.tasks.autoencoder.to_dict() == ae.tasks.autoencoder.to_dict()
  assert (joined.optim.to_dict(), joined.batch_size, joined.model.to_dict()) == \
      (rot.optim.to_dict(), rot.batch_size, rot.model.to_dict())   # the first config's recipe
  with pytest.raises(benchmark.BenchmarkConfigError, match=r"^'configs/fmnist_autoencoder.py:quick\+configs/"
                                                           r"fmnist_autoencoder.py:masking,quick': task "
                                                           r"'autoencoder' is in more than one of them$"):
    benchmark.load_config(f'{AE}+{DENOISE}')
  assert not benchmark.is_config_spec(f'{ROT}+/runs/x') and not benchmark.is_config_spec('')


def test_the_combination_is_the_best_validated_group_that_shares_a_backbone():
  """By validation probe: jigsaw's tile-sized backbone has no partner; denoising repeats the autoencoder's task;
  the rest join in order of validation probe, up to `top`."""
  tile, full = (('fc1', (576, 384)),), (('fc1', (3136, 384)),)
  candidates = [('rotation', ROT, 0.90, full), ('jigsaw', JIG, 0.95, tile), ('autoencoder', AE, 0.93, full),
                ('denoising', DENOISE, 0.92, full), ('inpainting', 'configs/fmnist_inpainting.py:quick', 0.85, full)]
  assert benchmark.combination_spec(candidates, 2) == (f'{AE}+{ROT}', ['autoencoder', 'rotation'])
  assert benchmark.combination_spec(candidates, 3)[1] == ['autoencoder', 'rotation', 'inpainting']
  assert benchmark.combination_spec(candidates[:2], 2) == ('', [])


def test_the_benchmark_pretrains_the_combination_it_chose_on_validation_and_keeps_it(tfds_dir, tmp_path):
  c = _quick(tfds_dir)
  c.benchmark.inits = {'rotation': ROT, 'autoencoder': AE, 'supervised': 'configs/fmnist_supervised.py:quick',
                       'random': ''}
  c.benchmark.combine.top = 2
  c.benchmark.pretrain_overrides = {'total_steps': 2, 'eval_every': 0, 'checkpoint_every': 2, 'eval_batch_size': 100,
                                    'data': {'eval_limit': 100}, 'online_probe': {'enabled': False}}
  workdir = str(tmp_path / 'bench')
  bench = benchmark.Benchmark(c, workdir)
  val = {'rotation': 0.80, 'autoencoder': 0.85, 'supervised': 0.95}
  for init in ('rotation', 'autoencoder', 'supervised'):
    # The choice reads only the backbones' shapes: each joined init's initial state, saved as its pretext run's
    # step-0 checkpoint (the supervised one is never joined: not even read).
    if init != 'supervised':
      ckpt = Checkpointer(os.path.join(bench.pretrain_dir(init), 'checkpoints'), async_save=False)
      ckpt.save(0, experiment.build_experiment(benchmark.pretrain_config(c, c.benchmark.inits[init])).state)
      ckpt.close()
    os.makedirs(bench.probe_dir(init))   # the probe's result, as the choice reads it (its figures given here)
    with open(os.path.join(bench.probe_dir(init), 'probe.json'), 'w', encoding='utf-8') as f:
      json.dump({'best_layer': 'pool2', 'layers': {'pool2': {'val_top1': val[init], 'test_top1': 0.5}}}, f)
  bench.choose_combination()
  assert list(bench.inits) == ['autoencoder', 'rotation', 'supervised', 'combination', 'random']   # name order
  chosen = _json(os.path.join(workdir, 'combination.json'))
  assert chosen['inits'] == ['autoencoder', 'rotation'] and chosen['spec'] == f'{AE}+{ROT}'   # not the supervised
  bench.pretrain('combination', '')
  final = _json(os.path.join(workdir, 'pretrain', 'combination', 'final_metrics.json'))
  assert final['step'] == 2 and 'rotation/acc' in final and 'autoencoder/psnr' in final
  assert final['loss'] == pytest.approx(final['rotation/loss'] + final['autoencoder/loss'], rel=1e-5)
  again = benchmark.Benchmark(c, workdir)   # a rerun keeps the choice (and its place before scratch)
  assert list(again.inits) == list(bench.inits) and again.inits['combination'] == chosen['spec']


@pytest.mark.parametrize('init', sorted(k for k, v in fmnist_benchmark.INITS.items() if v))
def test_the_resnet18_benchmark_pretrains_one_backbone_in_every_run(init):
  """:resnet18_cifar: every pretext run trains the benchmark's ResNet-18 (CIFAR stem), whatever its own config
  says, and builds with its tasks (jigsaw's tiles included: the ResNet pools whatever size it is given); the
  default keeps each pretext config's own model."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from jaxssl.models import build_backbone  # pylint: disable=import-outside-toplevel
  from jaxssl.tasks import build_tasks  # pylint: disable=import-outside-toplevel
  import types  # pylint: disable=import-outside-toplevel
  c = fmnist_benchmark.get_config('resnet18_cifar')
  spec = c.benchmark.inits[init]
  p = benchmark.pretrain_config(c, spec)
  check_config(p)
  assert p.model.to_dict() == c.model.to_dict() and c.model.name == 'resnet18_cifar'
  assert benchmark.pretrain_config(fmnist_benchmark.get_config(), spec).model.to_dict() == \
      benchmark.load_config(spec).model.to_dict()
  stand_in = types.SimpleNamespace(num_classes=10, mean=(0.5,), std=(0.25,), attribute_names=(),
                                   attribute_frequency=())
  tasks, _ = build_tasks(p.tasks, stand_in)
  shape = (p.data.pad_to or 28,) * 2 + (1,)

  def build():
    rngs = nnx.Rngs(0)
    backbone = build_backbone(p.model.name, input_shape=tasks[0].backbone_input_shape(shape), rngs=rngs,
                              **p.model.options)
    return backbone, {t.name: t.make_head(backbone, shape, rngs) for t in tasks}

  backbone, heads = nnx.eval_shape(build)
  assert set(heads) == set(p.tasks) and backbone.feature_names[-1] == 'pool'


def test_bfloat16_computes_every_runs_backbone_in_bfloat16():
  """:bfloat16: every pretext run (through benchmark.pretrain_overrides, which may add a backbone option: an open
  block) and every fine-tuning cell (the benchmark's own model block) build their backbone in bfloat16; its forward
  pass computes in it. A new key outside the open blocks stays one line."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from jaxssl.models import build_backbone  # pylint: disable=import-outside-toplevel
  c = fmnist_benchmark.get_config('bfloat16')
  assert c.model.options.dtype == 'bfloat16' and 'dtype' not in fmnist_benchmark.get_config().model.options
  for init, spec in c.benchmark.inits.items():
    if spec:
      p = benchmark.pretrain_config(c, spec)
      check_config(p)
      assert p.model.options.to_dict() == {**benchmark.load_config(spec).model.options.to_dict(),
                                           'dtype': 'bfloat16'}, init
  backbone = build_backbone('cifarnet', input_shape=(28, 28, 1), rngs=nnx.Rngs(0), **c.model.options)
  out = jax.eval_shape(lambda x: backbone(x, train=False), jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32))
  assert out[backbone.output_name].dtype == jnp.bfloat16
  assert backbone.conv1.kernel[...].dtype == jnp.float32   # the parameters stay float32
  c.benchmark.pretrain_overrides.model.optionz = {'dtype': 'bfloat16'}
  with pytest.raises(benchmark.BenchmarkConfigError, match="benchmark.pretrain_overrides.model: the config has no "
                                                           "key 'optionz'"):
    benchmark.pretrain_config(c, c.benchmark.inits['rotation'])


def test_a_test_cell_takes_the_selection_cells_training_only_when_their_configs_agree(tmp_path):
  """The copy: checkpoints whole (a half copy left by a stopped call is removed), the training rows, the init
  record, reused.json last; configs that differ in more than the split they are scored on copy nothing."""
  select, cell = tmp_path / 'select', tmp_path / 'cell'
  (select / 'checkpoints' / '10').mkdir(parents=True)
  (select / 'checkpoints' / '10' / 'state').write_text('weights')
  (select / 'init_from.json').write_text('{"checkpoint": "x"}')
  (select / 'final_metrics.json').write_text('{"step": 10, "split": "holdout"}')
  (select / 'metrics.jsonl').write_text('{"step": 10, "split": "train", "loss": 1.0}\n'
                                        '{"step": 10, "split": "holdout", "loss": 2.0}\n')
  selection = ml_collections.ConfigDict({'data': {'eval_split': 'holdout'}, 'optim': {'lr': 0.1}})
  test = ml_collections.ConfigDict({'data': {'eval_split': 'test'}, 'optim': {'lr': 0.2}})
  assert records.reuse_selection(test, selection, str(select), str(cell)) is None
  assert not cell.exists()
  test.optim.lr = 0.1
  (cell / 'checkpoints.partial.999').mkdir(parents=True)   # what a call stopped mid-copy leaves
  assert records.reuse_selection(test, selection, str(select), str(cell)) == str(select)
  assert sorted(os.listdir(cell)) == ['checkpoints', 'init_from.json', 'metrics.jsonl', 'reused.json']
  assert (cell / 'checkpoints' / '10' / 'state').read_text() == 'weights'
  assert (cell / 'metrics.jsonl').read_text() == '{"step": 10, "split": "train", "loss": 1.0}\n'
  assert _json(cell / 'reused.json')['trained_by'] == str(select)
  # A cell that holds a run already resumes as any cell: nothing is copied over it.
  assert records.reuse_selection(test, selection, str(select), str(cell)) is None


def test_the_selection_grid_is_every_combination_of_its_keys_and_a_bad_grid_is_one_line():
  """benchmark.select.grid: the product of its keys' choices, the first key outermost (equal scores go to the first);
  each selection cell named by every key's last part, so two names may not be one; a key the benchmark sets per
  cell cannot be chosen."""
  pairs = benchmark_configs.select_grid(fmnist_benchmark.get_config().benchmark.select)   # the default grid
  assert benchmark_configs.grid_choices(pairs) == [(0.1, 0.0), (0.1, 1.0), (1.0, 0.0), (1.0, 1.0)]
  assert benchmark_configs.choice_name(pairs, (0.1, 1.0)) == 'backbone_lr_scale=0.1,grad_clip_norm=1'
  assert benchmark_configs.choice_label((0.1, 1.0)) == '0.1,1' and not benchmark_configs.grid_choices([])
  assert benchmark_configs.show(0.1000001) == '0.1000001' and benchmark_configs.show(1e-5) == '1e-05'
  for bad, said in (({'key': 'optim.lr', 'choices': (1.0,), 'grid': ()}, r'^benchmark.select.key/choices are now '),
                    ({'grid': (('optim.lr', ()),)}, r"^benchmark.select.grid: \('optim.lr', \(\)\) is not a pair"),
                    ({'grid': (('optim.lr', (1.0,)), ('model.lr', (2.0,)))}, r'more than one key ends in lr'),
                    ({'grid': (('optim.lr', (1, 1.0)),)}, r"'optim.lr' has the choice 1 twice"),
                    ({'grid': (('model.name', ('a,b',)),)}, r"'model.name' has the choice 'a,b', which would not"),
                    ({'grid': (('batch_size', (32, 64)),)}, r"'batch_size' is set per cell by the benchmark")):
    with pytest.raises(benchmark.BenchmarkConfigError, match=said):
      benchmark_configs.select_grid(ml_collections.ConfigDict(bad))


def _scored(cell_dir, top1):
  os.makedirs(cell_dir, exist_ok=True)
  with open(os.path.join(cell_dir, 'final_metrics.json'), 'w', encoding='utf-8') as f:
    json.dump({'step': 10, 'classify/top1': top1}, f)


def test_a_finished_test_cell_must_have_trained_with_the_values_its_selection_chose(tfds_dir, tmp_path):
  """A test cell is kept only if it trained with the combination its selection cells chose (grid keys included);
  one whose selection cells are not on disk at all was chosen by another grid (the lr-only selection before the
  clip joined it) and is not silently kept. A selection fraction outside benchmark.fractions still trains its
  selection cells, before the cells that take its choice."""
  c = _quick(tfds_dir)
  c.benchmark.inits = ml_collections.ConfigDict({'random': ''})
  c.benchmark.fractions, c.benchmark.select.fractions = (0.05,), (0.05,)
  c.benchmark.select.grid = fmnist_benchmark.get_config('quick').benchmark.select.grid   # the config's 2 x 2
  b = benchmark.Benchmark(c, str(tmp_path))
  todo, config_for, _, _ = b._cells()   # pylint: disable=protected-access
  assert [t[3] for t in todo] == [(0.1, 0.0), (0.1, 1.0), (1.0, 0.0), (1.0, 1.0), None]
  assert os.path.basename(todo[1][4]) == 'random_f0.05_s0_backbone_lr_scale=0.1,grad_clip_norm=1'
  trained = config_for('random', 0.05, 0, (1.0, 1.0), False)   # a test cell trained with these values
  assert (trained.optim.backbone_lr_scale, trained.optim.grad_clip_norm) == (1.0, 1.0)
  test_cell = todo[4][4]
  os.makedirs(test_cell)
  with open(os.path.join(test_cell, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(trained.to_dict(), f)
  with pytest.raises(benchmark.BenchmarkConfigError, match=r'^finetune/cells/random_f0.05_s0 was trained with '
                     r'another recipe than the benchmark uses now \(its selection at 0.05 is not complete on disk: a '
                     r'selection cell was deleted, or benchmark.select.grid, select.fractions or select.seed '
                     r'changed\)'):
    b._cells()   # pylint: disable=protected-access
  for (*_, d), top1 in zip(todo[:4], (0.5, 0.6, 0.4, 0.7)):   # (1, 1) chosen
    _scored(d, top1)
  assert [t[4] for t in b._cells()[0]] == [test_cell]   # pylint: disable=protected-access
  fewer = c.copy_and_resolve_references()   # fewer images scored is another result (not so for a pretext run)
  fewer.data.eval_limit = int(c.data.eval_limit) - 100
  with pytest.raises(benchmark.BenchmarkConfigError, match=r'\(data.eval_limit 300 -> 200\)'):
    benchmark.Benchmark(fewer, str(tmp_path))._cells()   # pylint: disable=protected-access
  os.rename(todo[3][4], todo[3][4] + '.away')   # a selection cell deleted: the choice cannot be told
  with pytest.raises(benchmark.BenchmarkConfigError, match=r'its selection at 0.05 is not complete on disk'):
    b._cells()   # pylint: disable=protected-access
  os.rename(todo[3][4] + '.away', todo[3][4])
  _scored(todo[0][4], 0.9)   # now (0.1, 0) is chosen: the cell trained with (1, 1) is not that recipe
  with pytest.raises(benchmark.BenchmarkConfigError, match=r'\(optim.backbone_lr_scale 1.0 -> 0.1; '
                     r'optim.grad_clip_norm 1.0 -> 0.0\)'):
    b._cells()   # pylint: disable=protected-access
  # 100% takes the choice of 5%, which is not in this run's fractions: 5%'s selection cells train first.
  c.benchmark.fractions = (1.0,)
  other = benchmark.Benchmark(c, str(tmp_path / 'other'))
  cells, alone, _, _ = other._cells()   # pylint: disable=protected-access
  assert [(t[1], t[3]) for t in cells] == [
      (0.05, (0.1, 0.0)), (0.05, (0.1, 1.0)), (0.05, (1.0, 0.0)), (0.05, (1.0, 1.0)), (1.0, None)]
  # ... sized as its own test cells would be (the batch no larger than the stratified subset).
  c.benchmark.fractions = (0.05, 1.0)
  beside = benchmark.Benchmark(c, str(tmp_path / 'beside'))._cells()[1]   # pylint: disable=protected-access
  assert alone('random', 0.05, 0, (0.1, 0.0), True).to_dict() == beside('random', 0.05, 0, (0.1, 0.0), True).to_dict()


def test_a_given_inits_path_is_one_init_however_it_is_spelt_and_another_path_is_another(tfds_dir, tmp_path):
  """A given workdir (or weights file) is the init itself: its cells trained from it are kept when the path is spelt
  otherwise (a trailing slash, relative), and stop the benchmark with one line when it names another; its probe's
  settings name it the same way."""
  given = tmp_path / 'given_run'
  given.mkdir()
  c = _quick(tfds_dir)
  c.benchmark.inits = ml_collections.ConfigDict({'given': str(given), 'random': ''})
  c.benchmark.fractions, c.benchmark.select.fractions = (0.05,), ()
  b = benchmark.Benchmark(c, str(tmp_path / 'bench'))
  todo, config_for, _, _ = b._cells()   # pylint: disable=protected-access
  cell = next(t[4] for t in todo if t[0] == 'given')
  trained = config_for('given', 0.05, 0, None, False)
  os.makedirs(cell)
  for spelt, kept in ((str(given) + '/', True), (os.path.relpath(given), True), (str(tmp_path), False)):
    trained.init_from = spelt
    with open(os.path.join(cell, 'config.json'), 'w', encoding='utf-8') as f:
      json.dump(trained.to_dict(), f)
    if kept:
      assert cell in [t[4] for t in b._cells()[0]]   # pylint: disable=protected-access
    else:
      with pytest.raises(benchmark.BenchmarkConfigError, match=r'given_f0.05_s0 was trained with another recipe .*'
                         r'\(init_from '):
        b._cells()   # pylint: disable=protected-access
  c.benchmark.inits.given = os.path.relpath(given) + '/'
  other = benchmark.Benchmark(c, str(tmp_path / 'bench'))
  assert other._probe_settings('given') == b._probe_settings('given')   # pylint: disable=protected-access
  assert b._probe_settings('given')['backbone'] == os.path.realpath(given)   # pylint: disable=protected-access


def test_retrain_cells_with_only_moves_the_cells_of_that_calls_inits_alone(tfds_dir, tmp_path):
  """A benchmark.only call in a shared workdir that finds its cells trained with another recipe moves its own
  inits' cells (scratch's included) to stale/ and leaves the other inits' for the calls that run them."""
  c = _quick(tfds_dir)
  c.benchmark.inits = ml_collections.ConfigDict({'a': 'configs/fmnist_rotation.py:quick',
                                                 'b': 'configs/fmnist_rotation.py:quick', 'random': ''})
  c.benchmark.fractions, c.benchmark.select.fractions = (0.05,), ()
  workdir = str(tmp_path / 'bench')
  todo, config_for, _, _ = benchmark.Benchmark(c, workdir)._cells()   # pylint: disable=protected-access
  for init, fraction, seed, _, cell in todo:
    old = config_for(init, fraction, seed, None, False)
    old.optim.lr = 0.5   # trained with another recipe
    os.makedirs(cell)
    with open(os.path.join(cell, 'config.json'), 'w', encoding='utf-8') as f:
      json.dump(old.to_dict(), f)
  c.benchmark.only, c.benchmark.retrain_cells = ('a',), True
  with pytest.raises(benchmark.BenchmarkConfigError, match=r"of this call's inits, with benchmark.only"):
    benchmark.Benchmark(_with(c, retrain_cells=False), workdir)._cells()   # pylint: disable=protected-access
  left = benchmark.Benchmark(c, workdir)._cells()[0]   # pylint: disable=protected-access
  assert sorted(t[0] for t in left) == ['a', 'random']
  assert os.listdir(os.path.join(workdir, 'finetune', 'cells')) == ['b_f0.05_s0']
  (stale,) = os.listdir(os.path.join(workdir, 'stale'))
  assert sorted(os.listdir(os.path.join(workdir, 'stale', stale, 'finetune', 'cells'))) == \
      ['a_f0.05_s0', 'random_f0.05_s0']


def test_kfold_subsets_give_each_seed_a_disjoint_fold_and_skip_the_folds_a_fraction_lacks(tfds_dir, tmp_path):
  """benchmark.subsets='kfold' (seed experiment 003's protocol): each seed's cell trains on its own disjoint
  stratified fold of the training images less the validation images; 100% has one fold, so one cell."""
  c = _quick(tfds_dir)
  c.benchmark.inits = ml_collections.ConfigDict({'random': ''})
  c.benchmark.subsets, c.benchmark.seeds, c.benchmark.fractions = 'kfold', (0, 1), (0.25, 1.0)
  c.benchmark.select.fractions = ()   # the folds are the point here: no selection cells
  c.benchmark.probe.layers = ('pool2',)   # the probe's layers are not (its lowshot is: its only kfold subsets)
  c.data.train_limit = 600
  workdir = str(tmp_path / 'kfold')
  results = benchmark.run_benchmark(c, workdir)
  cells = os.path.join(workdir, 'finetune', 'cells')
  assert sorted(os.listdir(cells)) == ['random_f0.25_s0', 'random_f0.25_s1', 'random_f1_s0']
  info = datasets.get_dataset(c.data.name, c.data)
  base = benchmark.cell_base(c)
  labels = subsets.source_labels(subsets.load_sources(info, base.data)[0])
  folds = []
  for seed in (0, 1):
    cfg = _json(os.path.join(cells, f'random_f0.25_s{seed}', 'config.json'))
    assert (cfg['data']['subset_mode'], cfg['data']['subset_seed']) == ('kfold', seed)
    folds.append(set(subsets.labelled_subset(labels, 0.25, seed, 'kfold').tolist()))
    assert cfg['batch_size'] <= len(folds[-1])
  assert not folds[0] & folds[1] and len(folds[0]) == len(folds[1])
  assert results['subsets'] == 'kfold' and results['inits'][0]['finetune']['0.25']['n'] == 2
  assert results['inits'][0]['finetune']['1']['n'] == 1
  assert results['expected_cells'] == {'0.25': 2, '1': 1}   # counted from the folds, not from what is done


def test_a_diverging_cell_is_recorded_and_the_benchmark_goes_on(tfds_dir, tmp_path, capsys):
  """A fine-tuning cell that diverges is an outcome of its recipe, not a fault: diverged.json records it and the
  benchmark goes on (it used to stop there, idle overnight). A selection value that diverges loses; a test cell that
  diverged is left out of its mean and counted in the table."""
  c = _quick(tfds_dir)
  c.benchmark.inits = ml_collections.ConfigDict({'random': ''})
  c.benchmark.fractions, c.benchmark.select.fractions = (0.05,), (0.05,)
  # One key (the cells named as before the grid): the backbone's lr x 1e5 diverges within the first steps.
  c.benchmark.select.grid = (('optim.backbone_lr_scale', (1e5, 0.1)),)
  c.benchmark.lowshot = False
  c.benchmark.probe.layers = ('pool2',)
  workdir = str(tmp_path / 'bench')
  results = benchmark.run_benchmark(c, workdir)
  bad = os.path.join(workdir, 'finetune', 'select', 'random_f0.05_s0_backbone_lr_scale=100000')
  record = _json(os.path.join(bad, benchmark.DIVERGED))
  assert record['optim.backbone_lr_scale'] == 1e5 and 1 <= record['step'] <= 10   # the first bad step, not a later one
  assert not os.path.exists(os.path.join(bad, 'final_metrics.json'))
  row = results['inits'][0]
  assert len(results['inits']) == 1
  assert row['chosen'] == {'0.05': (0.1,)} and row['select_diverged'] == ['0.05/100000']
  assert row['finetune']['0.05']['n'] == 1 and row['finetune']['0.05']['diverged'] == 0
  # A second subset's test cell that diverged: counted, not averaged; a rerun trains neither again.
  c.benchmark.seeds = (0, 1)
  cell = os.path.join(workdir, 'finetune', 'cells', 'random_f0.05_s1')
  os.makedirs(cell)
  with open(os.path.join(cell, benchmark.DIVERGED), 'w', encoding='utf-8') as f:
    json.dump({'step': 3}, f)
  again = benchmark.run_benchmark(c, workdir)
  assert again['inits'][0]['finetune']['0.05'] == {**row['finetune']['0.05'], 'diverged': 1}
  assert {'init': 'random', 'fraction': 0.05, 'seed': 1, 'diverged': True} in again['cells']
  with open(os.path.join(workdir, 'results.md'), encoding='utf-8') as f:
    assert '{1 of 2 diverged}' in f.read()
  assert os.listdir(cell) == [benchmark.DIVERGED]
  # Cells trained with another recipe than the benchmark's now: one line, or with retrain_cells all set aside.
  c.optim.lr = 0.01
  with pytest.raises(benchmark.BenchmarkConfigError, match=r'^finetune/(select|cells)/random_f0.05_s\d\S* was trained '
                     r'with another recipe than the benchmark uses now \(optim.lr 0.05 -> 0.01\): add '
                     r'--config.benchmark.retrain_cells=True'):
    benchmark.run_benchmark(c, workdir)
  c.benchmark.retrain_cells = True
  b = benchmark.Benchmark(c, workdir)
  todo = b._cells()[0]   # pylint: disable=protected-access
  assert len(todo) == 4 and not os.path.exists(os.path.join(workdir, 'finetune'))
  (stale,) = [d for d in os.listdir(os.path.join(workdir, 'stale')) if d.startswith('finetune-')]
  assert os.path.exists(os.path.join(workdir, 'stale', stale, 'finetune', 'cells', 'random_f0.05_s0',
                                    'final_metrics.json'))
  assert not any(p.startswith('finetune') for p in _json(os.path.join(workdir, 'timings.json')))
  # Every value of the grid diverges: the first is taken, and said to be no choice (log, results, table). (Its
  # fine-tuning from scratch: the cells above are in stale/, the probe is kept.)
  c.benchmark.retrain_cells, c.benchmark.seeds = False, (0,)
  c.benchmark.select.grid = (('optim.backbone_lr_scale', (1e5, 1e6)),)
  capsys.readouterr()
  results = benchmark.run_benchmark(c, workdir)
  assert '(backbone_lr_scale=100000, every value diverged on validation: the first)' in capsys.readouterr().out
  row = results['inits'][0]
  assert row['chosen_all_diverged'] == ['0.05'] and row['finetune']['0.05']['n'] == 0
  with open(os.path.join(workdir, 'results.md'), encoding='utf-8') as f:
    assert '| diverged [100000; all diverged] |' in f.read()


def test_a_signal_during_a_cells_final_evaluation_stops_the_benchmark_before_the_next_part(tfds_dir, tmp_path):
  """SIGTERM that lands after a fine-tuning cell's last step (during its final evaluation) finishes that cell and
  stops the benchmark before the next one: exit 143, its results written; the same command goes on from the next
  cell. A real signal, sent by the process to itself from within the final evaluation."""
  workdir = tmp_path / 'bench'
  script = (
      'import sys; sys.path.insert(0, %r); sys.path.insert(0, %r)\n'
      'import ml_collections\n'
      'from conftest import SIGNAL_IN_FINAL_EVALUATION\n'
      'from test_benchmark import _quick\n'
      'from jaxssl import benchmark\n'
      'exec(SIGNAL_IN_FINAL_EVALUATION)   # cells evaluate only at their end: the first line is the final one\n'
      'c = _quick(%r)\n'
      'c.benchmark.inits = ml_collections.ConfigDict({"random": ""})\n'
      'c.benchmark.fractions, c.benchmark.select.fractions, c.benchmark.seeds = (0.05,), (), (0, 1)\n'
      'c.benchmark.lowshot = False\n'
      'c.benchmark.probe.layers = ("pool2",)\n'
      'benchmark.run_benchmark(c, sys.argv[1])\n'
      'print("benchmark done")\n') % (str(REPO), str(REPO / 'tests'), tfds_dir)
  first = subprocess.run([sys.executable, '-c', script, str(workdir)], cwd=REPO, capture_output=True, text=True,
                         timeout=300, check=False)
  out = first.stdout + first.stderr
  assert first.returncode == 143, out
  assert 'benchmark stopped after fine-tuning random_f0.05_s0 (finished); rerun the same command to continue' in out
  assert (workdir / 'finetune' / 'cells' / 'random_f0.05_s0' / 'final_metrics.json').exists()
  assert not (workdir / 'finetune' / 'cells' / 'random_f0.05_s1').exists() and 'benchmark done' not in out
  assert [c['seed'] for c in _json(workdir / 'results.json')['cells'] if 'classify/top1' in c] == [0]
  assert 'finetune/random' in _json(workdir / 'timings.json')
  again = subprocess.run([sys.executable, '-c', script, str(workdir)], cwd=REPO, capture_output=True, text=True,
                         timeout=300, check=False, env={**os.environ, 'JAXSSL_TEST_SIGNALLED': '1'})   # no signal
  out = again.stdout + again.stderr
  assert again.returncode == 0 and 'benchmark done' in again.stdout, out
  assert 'cell random_f0.05_s1' in out and 'cell random_f0.05_s0' not in out   # the finished cell is not trained again
  assert (workdir / 'finetune' / 'cells' / 'random_f0.05_s1' / 'final_metrics.json').exists()
