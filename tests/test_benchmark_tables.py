"""The benchmark's records, tables and pictures (jaxssl/benchmark_records.py, benchmark_tables.py,
benchmark_figures.py), on made-up rows: the wall and CPU time ledger, the targets' judgement, the paired differences
from scratch, the pictures' looks. tests/test_benchmark.py runs the benchmark itself."""

import json
import subprocess
import sys

from configs import fmnist_benchmark
from jaxssl import benchmark, benchmark_figures, benchmark_records, benchmark_tables


def _json(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def test_the_ledger_says_when_a_parts_cpu_time_is_known_only_in_part(tmp_path):
  """Wall time recorded before CPU time was (a benchmark begun with an older version) leaves that part's CPU total
  unknown (null), and results.md says for how many parts it is whole; finetune_fraction/* are not parts twice."""
  with open(tmp_path / 'timings.json', 'w', encoding='utf-8') as f:
    json.dump({'pretrain/a': 10.0}, f)
  ledger = benchmark_records.Ledger(str(tmp_path))
  since = ledger.clock()
  sum(i * i for i in range(200000))   # some CPU time
  ledger.add(since, 'pretrain/a', 'probe/a')
  ledger.add(ledger.clock(), 'finetune/a', 'finetune_fraction/0.1')
  cpu = _json(tmp_path / 'cpu_timings.json')
  assert cpu['pretrain/a'] is None and cpu['probe/a'] > 0 and set(cpu) == set(_json(tmp_path / 'timings.json'))
  r = {'timings_s': ledger.seconds, 'cpu_timings_s': ledger.cpu_seconds, 'total_cpu_s': 1.0}
  assert benchmark_tables.cpu_note(r).startswith('CPU time recorded whole for 2 of 3 parts')
  r['cpu_timings_s'] = {**ledger.cpu_seconds, 'pretrain/a': 5.0}
  assert benchmark_tables.cpu_note(r).startswith('CPU time: 1s')
  # calls.jsonl with a torn last line (a write cut short): the whole rows are read, the torn one skipped.
  (tmp_path / 'calls.jsonl').write_text('{"started": "a"}\n{"started": "b"}\n{"start', encoding='utf-8')
  assert benchmark_records.read_jsonl(str(tmp_path / 'calls.jsonl')) == [{'started': 'a'}, {'started': 'b'}]


_PAUSED_CHILD = """
import sys, time
from jaxssl import benchmark_records as r
r.PauseWatch._shared = r.PauseWatch(tick=0.05, gap=0.5)
ledger = r.Ledger(sys.argv[1])
since, t0 = ledger.clock(), time.perf_counter()
print('ready', flush=True)
sys.stdin.readline()   # the parent stops this process, continues it, then writes a line
ledger.add(since, 'stopped')
elapsed = time.perf_counter() - t0
since = ledger.clock()
time.sleep(1.0)
ledger.add(since, 'ran')
print(elapsed, flush=True)
"""


def test_the_ledgers_wall_time_leaves_out_a_sigstop_pause(tmp_path):
  """A real SIGSTOP / SIGCONT of a process timing a part (what the benchmark gets when paused for a test run): the
  part's wall time is the time it ran, not the pause; a part that was not paused keeps its whole wall time."""
  import signal  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  with subprocess.Popen([sys.executable, '-c', _PAUSED_CHILD, str(tmp_path)], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, text=True) as child:
    try:
      assert child.stdout.readline().strip() == 'ready'
      time.sleep(0.3)
      child.send_signal(signal.SIGSTOP)
      stopped = time.perf_counter()
      time.sleep(2.0)
      child.send_signal(signal.SIGCONT)
      stopped = time.perf_counter() - stopped
      time.sleep(0.3)
      child.stdin.write('go\n')
      child.stdin.flush()
      elapsed = float(child.stdout.readline())
      assert child.wait(timeout=60) == 0
    finally:
      child.kill()
  seconds = _json(tmp_path / 'timings.json')
  assert elapsed > stopped >= 2.0
  assert abs(seconds['stopped'] - (elapsed - stopped)) < 0.4, (seconds, elapsed, stopped)
  assert abs(seconds['ran'] - 1.0) < 0.4, seconds


def _row(init, probe=None, val=None, finetune=None, select_val=None):
  return {'init': init, 'probe_top1': probe, 'best_layer': 'pool1' if probe else None,
          'probe_layers_val': {'pool1': val} if probe else {}, 'select_val': select_val or {},
          'finetune': {f: {'mean': m, 'std': 0.0, 'n': 3} for f, m in (finetune or {}).items()}}


def test_the_targets_are_judged_by_the_init_the_validation_images_choose():
  """A target on "the best self-supervised init" takes the init chosen on validation (not the best on test: the
  maximum of many test scores flatters); labelled inits are references, never that init; "no init below scratch"
  counts every init; a target whose cells are not all done is "not yet" or "so far", never met or not met."""
  r = {'seeds': [0, 1, 2], 'subsets': 'random', 'fractions': [0.001, 0.01, 1.0], 'protocol': {
      'labelled': ['supervised'], 'select': {'fractions': [0.001, 0.01]}, 'targets': {
          'probe': 0.9, 'over_scratch': [[0.01, 0.05], [0.001, 0.1]], 'below_scratch': [[1.0, 0.003]]}}, 'inits': [
              _row('a', 0.91, 0.80, {'0.01': 0.86, '1': 0.920}, {'0.01/0.1': 0.85, '0.01/1': 0.70}),
              _row('b', 0.92, 0.79, {'0.01': 0.87, '1': 0.9225}, {'0.01/0.1': 0.84}),
              _row('supervised', 0.95, 0.99, {'0.01': 0.95, '1': 0.930}, {'0.01/0.1': 0.99}),
              _row('random', 0.85, 0.84, {'0.01': 0.80, '1': 0.925})]}
  checked = benchmark_tables.check_targets(r)
  assert len(checked) == 4
  probe, one, tenth, full = checked[0], checked[1], checked[2], checked[3]
  assert probe['met'] and probe['measured'] == 'a 91.00 (pool1; chosen on validation); best on test: b 92.00'
  assert one['met'] and 'a 86.00 (+6.00; chosen on validation); best on test: b 87.00 (+7.00)' in one['measured']
  assert tenth == {'target': '0.1% labels: best self-supervised fine-tuning >= scratch + 10.0', 'measured': 'not yet',
                   'met': None}
  assert full['met'] is False and full['measured'] == 'scratch 92.50; lowest: a 92.00 (-0.50; 3 inits)'
  r['inits'][0]['finetune']['0.01']['mean'] = 0.849   # +4.9 < 5: not met, though b's +7 on test would be
  assert benchmark_tables.check_targets(r)[1]['met'] is False
  md = '\n'.join(benchmark_tables.targets_table(r))
  assert '| 1% labels: best self-supervised fine-tuning >= scratch + 5.0 | scratch 80.00; a 84.90 (-' not in md
  assert '| 1% labels: best self-supervised fine-tuning >= scratch + 5.0 | scratch 80.00; a 84.90 (+4.90;' in md
  assert md.count('| not met |') == 2 and md.count('| met |') == 1
  # Cells still under way (b has 2 of 3 subsets at 1%): judged when complete, and said so meanwhile.
  r['inits'][1]['finetune']['1']['n'] = 2
  full = benchmark_tables.check_targets(r)[3]
  assert full['met'] is None and full['measured'].startswith('so far (cells to come; differences over the subsets '
                                                              'both have): scratch 92.50')
  # Meanwhile the differences pair by subset: b's two cells against scratch's on the same two subsets (+1.25), not
  # against scratch's mean over three (-0.25, which would make b the lowest).
  per_seed = {'a': (0.93, 0.93, 0.93), 'b': (0.90, 0.945), 'supervised': (0.93, 0.93, 0.93),
              'random': (0.91, 0.91, 0.955)}
  r['cells'] = [{'init': i, 'fraction': 1.0, 'seed': seed, 'classify/top1': v}
                for i, vals in per_seed.items() for seed, v in enumerate(vals)]
  r['inits'][0]['finetune']['1']['mean'] = 0.93
  assert benchmark_tables.check_targets(r)[3]['measured'].endswith('lowest: a 93.00 (+0.50; 3 inits)')
  del r['cells']
  assert benchmark_tables.check_targets(r)[3]['measured'].endswith('lowest: b 92.25 (-0.25; 3 inits)')
  r['inits'][0]['finetune']['1']['mean'] = 0.920
  # No selection cell at a fraction: the validation probe chooses, and says so.
  del r['inits'][0]['select_val']['0.01/0.1'], r['inits'][0]['select_val']['0.01/1']
  del r['inits'][1]['select_val']['0.01/0.1']
  assert 'a 84.90 (+4.90; chosen by its validation probe)' in benchmark_tables.check_targets(r)[1]['measured']
  # A run without a target's fraction (benchmark.fractions narrowed) says so rather than "not yet".
  r['fractions'] = [0.01, 1.0]
  assert benchmark_tables.check_targets(r)[2]['measured'] == 'not in this run (benchmark.fractions)'
  # The table says a fraction's cells are not all done, and gives no difference from scratch over other subsets.
  r.update({'fractions': [0.01, 1.0], 'timings_s': {}, 'total_wall_s': 0.0, 'total_cpu_s': 0.0})
  r['protocol'].update({'select': {'grid': [['optim.backbone_lr_scale', [0.1, 1.0]]]}, 'val_fraction': 0.1})
  for row in r['inits']:
    row.update({'knn_top1': None, 'wall_s': dict.fromkeys(('pretrain', 'probe', 'knn', 'lowshot', 'finetune'))})
  rows = {line.split(' | ')[0][2:]: line for line in benchmark_tables.markdown(r).splitlines()[2:6]}
  assert rows['b'].endswith('| 87.0 +- 0.0 (+7.0) | 92.2 +- 0.0 (2 of 3 cells so far) | - / - / - / - / - |')
  assert rows['a'].endswith('| 84.9 +- 0.0 (+4.9) | 92.0 +- 0.0 (-0.5) | - / - / - / - / - |'), rows['a']
  # A benchmark.only run says so, and one without a self-supervised init judges no target.
  r['protocol']['only'], r['inits'] = ['supervised'], r['inits'][2:]
  assert benchmark_tables.check_targets(r) == [{'target': 'every target', 'met': None,
                                                'measured': 'no self-supervised init in this run'}]
  assert 'This run: supervised beside scratch only (benchmark.only)' in benchmark_tables.markdown(r)


def test_a_diverged_cell_leaves_the_difference_from_scratch_to_the_subsets_both_scored():
  """A complete fraction where scratch's third subset diverged: the difference is over the two subsets both scored
  (+9.5), not the init's 3-subset mean less scratch's 2-subset one (+10.0), in the table and the target's line;
  a choice every selection value of which diverged is marked so; no subset both scored: no difference, not judged."""
  per_seed = {'a': (0.79, 0.80, 0.81), 'random': (0.69, 0.71)}   # scratch's seed 2 diverged
  r = {'seeds': [0, 1, 2], 'subsets': 'random', 'fractions': [0.01], 'expected_cells': {'0.01': 3},
       'timings_s': {}, 'total_wall_s': 0.0, 'total_cpu_s': 0.0,
       'protocol': {'labelled': [], 'val_fraction': 0.1, 'targets': {'over_scratch': [[0.01, 0.05]]},
                    'select': {'fractions': [0.01], 'grid': [['optim.backbone_lr_scale', [0.1, 1.0]]]}},
       'cells': [{'init': i, 'fraction': 0.01, 'seed': seed, 'classify/top1': v}
                 for i, vals in per_seed.items() for seed, v in enumerate(vals)] +
                [{'init': 'random', 'fraction': 0.01, 'seed': 2, 'diverged': True}],
       'inits': [_row('a', 0.9, 0.9, {'0.01': 0.80}, {'0.01/0.1': 0.8}), _row('random', 0.85, 0.85, {'0.01': 0.70})]}
  r['inits'][1]['finetune']['0.01'].update({'n': 2, 'diverged': 1})
  for row, chosen in zip(r['inits'], ((0.1,), (0.1,))):
    row.update({'knn_top1': None, 'chosen': {'0.01': chosen},
                'wall_s': dict.fromkeys(('pretrain', 'probe', 'knn', 'lowshot', 'finetune'))})
  r['inits'][1]['chosen_all_diverged'] = ['0.01']
  rows = {line.split(' | ')[0][2:]: line for line in benchmark_tables.markdown(r).splitlines()[2:4]}
  assert '| 80.0 +- 0.0 (+9.5) [0.1] |' in rows['a'], rows['a']
  assert '| 70.0 +- 0.0 {1 of 3 diverged} [0.1; all diverged] |' in rows['random (scratch)'], rows
  assert '(+9.50; chosen on validation)' in benchmark_tables.check_targets(r)[0]['measured']
  r['cells'] = [cell for cell in r['cells'] if cell['init'] != 'a' or cell['seed'] == 2]   # a's 0 and 1 diverged
  r['inits'][0]['finetune']['0.01'].update({'n': 1, 'diverged': 2})
  assert '| 80.0 +- 0.0 {2 of 3 diverged} [0.1] |' in benchmark_tables.markdown(r)
  target = benchmark_tables.check_targets(r)[0]
  assert target['met'] is None and '(no subset in common yet; chosen on validation)' in target['measured']


def test_the_paired_table_takes_each_subset_against_scratchs_same_subset_and_the_probe_table_every_layer():
  """results.md's paired table: per init and fraction each subset's difference from scratch's same subset and
  their mean over the subsets both scored ('-' where one is missing: under way or diverged; scratch has no row);
  the per-layer probe table: every layer any init probed ('-' where an init has not that layer), each pretext
  task's own figure (a combination's two; not the in-run k-NN's or online probe's), the layer chosen on validation
  and the k-NN."""
  per_seed = {('a', 0.01): (0.80, 0.75, 0.90), ('random', 0.01): (0.70, 0.78, None), ('a', 0.1): (0.91,),
              ('random', 0.1): (0.90, 0.92)}
  r = {'seeds': [0, 1, 2], 'fractions': [0.01, 0.1, 1.0],
       'cells': [{'init': i, 'fraction': f, 'seed': seed, **({'classify/top1': v} if v is not None else
                                                              {'diverged': True})}
                 for (i, f), vals in per_seed.items() for seed, v in enumerate(vals)],
       'inits': [{'init': 'a', 'probe_layers': {'conv1': 0.9, 'pool2': 0.8}, 'best_layer': 'conv1',
                  'probe_top1': 0.9, 'knn_top1': 0.85,
                  'pretext': {'step': 10, 'loss': 1.0, 'rotation/acc': 0.5, 'rotation/acc_0': 0.9,
                              'autoencoder/mse': 0.01, 'autoencoder/psnr': 20.0, 'knn/top1': 0.7,
                              'probe/top1': 0.6}},
                 {'init': 'b', 'probe_layers': {'conv1': 0.91}, 'best_layer': 'conv1', 'probe_top1': 0.91,
                  'knn_top1': None, 'pretext': {'jigsaw/exact': 0.25, 'jigsaw/solved': 0.1}},
                 {'init': 'random', 'probe_layers': {'conv1': 0.88, 'pool2': 0.87}, 'best_layer': 'pool2',
                  'probe_top1': 0.87, 'knn_top1': 0.8, 'pretext': None}]}
  lines = benchmark_tables.paired_table(r)
  assert lines[1] == '| init | fine-tuned on 1%: mean (per subset) | fine-tuned on 10%: mean (per subset) |'
  assert lines[3] == '| a | +3.5 (+10.0, -3.0, -) | +1.0 (+1.0, -, -) |'   # (10 - 3) / 2 over seeds 0 and 1
  assert lines[4] == '| b | - | - |' and not any(line.startswith('| random') for line in lines)
  assert not benchmark_tables.paired_table({**r, 'cells': []})
  # k-fold: a fraction has the folds it has (one at 100%), not a '-' for each fold it cannot have; a difference
  # that rounds to zero is +0.0.
  folds = {('a', 0.25): (0.8, 0.7), ('random', 0.25): (0.7, 0.7004), ('a', 1.0): (0.9,), ('random', 1.0): (0.89,)}
  lines = benchmark_tables.paired_table({**r, 'subsets': 'kfold', 'seeds': [0, 1], 'fractions': [0.25, 1.0],
                                         'cells': [{'init': i, 'fraction': f, 'seed': seed, 'classify/top1': v}
                                                   for (i, f), vals in folds.items() for seed, v in enumerate(vals)]})
  assert lines[1] == '| init | fine-tuned on 25%: mean (per fold) | fine-tuned on 100%: mean (per fold) |'
  assert lines[3] == '| a | +5.0 (+10.0, +0.0) | +1.0 (+1.0) |' and 'on the same fold' in lines[-2]
  lines = benchmark_tables.probe_layers_table(r)
  assert lines[1] == '| init | pretext (held-out, own task) | conv1 | pool2 | chosen on val | k-NN |'
  assert lines[3] == '| a | rotation/acc 0.500, autoencoder/psnr 20.000 | 90.0 | 80.0 | conv1 90.00 | 85.0 |'
  assert lines[4] == '| b | jigsaw/exact 0.250 | 91.0 | - | conv1 91.00 | - |'
  assert lines[5] == '| random (untrained) | - | 88.0 | 87.0 | pool2 87.00 | 80.0 |'
  assert not benchmark_tables.probe_layers_table({'inits': [{'init': 'a'}]})


def test_every_init_has_a_look_of_its_own_in_the_pictures():
  """probe_layers.png and label_efficiency.png draw every init of the full benchmark (13) with its own colour and
  marker (matplotlib's default cycle repeats after 10); the references apart: random black and dashed, a labelled
  init grey."""
  inits = list(fmnist_benchmark.INITS) + [benchmark.COMBINATION]
  look = benchmark_figures.styles(inits, labelled=('supervised',))
  assert len({(str(s['color']), s['marker'], s['ls']) for s in look.values()}) == len(inits) == 13
  assert len({str(s['color']) for s in look.values()}) == 13
  assert look['random'] == {'color': 'black', 'ls': '--', 'marker': 'x'} and look['supervised']['color'] == 'dimgray'


def test_the_label_efficiency_picture_draws_a_fraction_once_its_cells_are_done(tmp_path):
  """A fraction whose cells are under way would plot a mean of other subsets than the next init's (one cell of
  three read as a point with no error bar): it is drawn once all its cells are done; the frozen probe as it is."""
  def ft(n):
    return {'mean': 0.8, 'std': 0.01, 'n': n, 'diverged': 0}
  r = {'metric': 'classify/top1', 'fractions': [0.01, 1.0], 'expected_cells': {'0.01': 3, '1': 3},
       'protocol': {'labelled': []}, 'inits': [
           {'init': 'rotation', 'finetune': {'0.01': ft(3), '1': ft(1)}, 'lowshot': {'0.01': ft(3)}},
           {'init': 'random', 'finetune': {'0.01': ft(3), '1': ft(3)}, 'lowshot': {'0.01': ft(3)}}]}
  drawn = benchmark_figures.label_efficiency(r, str(tmp_path / 'le.png'))
  assert drawn == {'finetune': {'rotation': ['0.01'], 'random': ['0.01', '1']},
                   'lowshot': {'rotation': ['0.01'], 'random': ['0.01']}}
  assert (tmp_path / 'le.png').stat().st_size > 10_000


def test_the_gain_picture_draws_each_init_at_the_fractions_it_shares_a_subset_with_scratch(tmp_path):
  """gain_over_scratch.png: a panel per fraction some init has a difference from scratch at (a subset both scored),
  a row per init; an init whose only cell there diverged, and scratch itself, have no point in it; no cells: no
  picture."""
  per_seed = {('a', 0.001): (0.70, 0.66, 0.69), ('random', 0.001): (0.65, 0.64, 0.66), ('a', 0.01): (0.81, None),
              ('b', 0.01): (None,), ('random', 0.01): (0.80, 0.79)}
  r = {'metric': 'classify/top1', 'seeds': [0, 1, 2], 'fractions': [0.001, 0.01, 1.0],
       'protocol': {'labelled': [], 'targets': {'over_scratch': [[0.001, 0.1], [0.01, 0.05]],
                                                'below_scratch': [[1.0, 0.003]]}},
       'cells': [{'init': i, 'fraction': f, 'seed': seed, **({'classify/top1': v} if v is not None else
                                                              {'diverged': True})}
                 for (i, f), vals in per_seed.items() for seed, v in enumerate(vals)],
       'inits': [{'init': name} for name in ('a', 'b', 'random')]}
  fractions, diffs = benchmark_tables.paired_differences(r)
  assert fractions == ['0.001', '0.01'] and set(diffs) == {'a', 'b'}
  assert [round(d, 6) for d in diffs['a']['0.001']] == [0.05, 0.02, 0.03] and diffs['b']['0.01'][0] is None
  path = tmp_path / 'gain.png'
  assert benchmark_figures.gain_over_scratch(r, str(path)) == {'a': ['0.001', '0.01']}
  assert path.stat().st_size > 10_000
  assert benchmark_figures.gain_over_scratch({**r, 'cells': []}, str(tmp_path / 'none.png')) == {}
  assert not (tmp_path / 'none.png').exists()
