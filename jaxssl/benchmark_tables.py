"""The benchmark's tables (jaxssl/benchmark.py): results.md and results.csv from the results it collects."""

from __future__ import annotations

import csv
import io
from typing import Any

from jaxssl.benchmark_configs import short_key, show


# A pretext run's figure on its own task (tables, pretext_curves.png): the first of these endings among its metrics.
PRETEXT_METRICS = ('/acc', '/top1', '/exact', '/cos', '/psnr')
IN_RUN_PROBES = ('knn', 'probe')   # a run's labelled probes (online_knn, the online_probe switch): not its task


def duration(seconds: float) -> str:
  """``1h02m``, ``3m05s`` or ``42s``."""
  seconds = int(round(seconds))
  h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s' if m else f'{s}s'


def mean_std(vals: list[float]) -> dict[str, float]:
  """Mean, sample standard deviation (0 for one value) and count."""
  mean = sum(vals) / len(vals)
  std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
  return {'mean': mean, 'std': std, 'n': len(vals)}


def layers_text(layers: list[str]) -> str:
  """The layers chosen for a fraction's subsets: one name where they agree, else each with its count (``fc1 x2,
  pool2``) in the order first chosen."""
  counts = {name: layers.count(name) for name in layers}
  return ', '.join(name if k == 1 else f'{name} x{k}' for name, k in counts.items())


def num(x, digits: int = 4) -> str:
  return '' if x is None else f'{x:.{digits}f}'


def cpu_note(r: dict[str, Any]) -> str:
  """The total CPU time, where every part has one (a benchmark begun before CPU time was recorded has not)."""
  wall = [part for part in r['timings_s'] if not part.startswith('finetune_fraction/')]   # parts counted once
  cpu = r.get('cpu_timings_s') or {}
  missing = [part for part in wall if cpu.get(part) is None]
  if missing:
    return (f'CPU time recorded whole for {len(wall) - len(missing)} of {len(wall)} parts; per part in '
            'timings.json and cpu_timings.json')
  return f"CPU time: {duration(r['total_cpu_s'])}; per part in timings.json and cpu_timings.json"


def markdown(r: dict[str, Any]) -> str:
  """One table, init x {best layer's probe, k-NN, fine-tuning at each fraction}, test top-1 in %; fine-tuning as
  mean +- std over seeds, with the difference from scratch (the random init's cells); then
  :func:`lowshot_table`."""
  fr = [f'{f:g}' for f in r['fractions']]
  grid = r['protocol']['select'].get('grid', ())
  scratch_row = next((row for row in r['inits'] if row['init'] == 'random'), {'finetune': {}})
  scratch = scratch_row['finetune']
  head = ['init', 'probe (best layer on val)', 'k-NN'] + [f'fine-tune {100 * float(f):g}%' for f in fr] + \
      ['wall: pretrain / probe / k-NN / lowshot / fine-tune']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  expected = expected_cells(r)
  for row in r['inits']:
    probe = f"{100 * row['probe_top1']:.1f} ({row['best_layer']})" if row['probe_top1'] is not None else '-'
    knn = f"{100 * row['knn_top1']:.1f}" if row['knn_top1'] is not None else '-'
    cols = []
    for f in fr:
      c = row['finetune'].get(f)
      if c is None:
        cols.append('-')
        continue
      text = f"{100 * c['mean']:.1f} +- {100 * c['std']:.1f}" if c['n'] else 'diverged'
      complete = fraction_complete(row, f, expected)
      if c['n'] and row['init'] != 'random' and scratch.get(f, {}).get('n') and complete and \
          fraction_complete(scratch_row, f, expected):   # else not the same subsets
        gain = _gain(r, row, f, scratch[f]['mean'], True)   # over the subsets both scored, where a cell diverged
        text += '' if gain is None else f' ({100 * gain:+.1f})'
      if not complete:
        text += f" ({_cells_done(row, f)} of {expected[f]} cells" + ('; skipped)' if row.get('error') else ' so far)')
      if c.get('diverged') and c['n']:
        text += f" {{{c['diverged']} of {c['diverged'] + c['n']} diverged}}"
      if row.get('chosen', {}).get(f) is not None:
        text += f" [{', '.join(show(v) for v in row['chosen'][f])}" + \
            ('; all diverged]' if f in row.get('chosen_all_diverged', ()) else ']')
      cols.append(text)
    wall = ' / '.join(duration(row['wall_s'][p]) if row['wall_s'][p] else '-'
                      for p in ('pretrain', 'probe', 'knn', 'lowshot', 'finetune'))
    name = f"{row['init']} (scratch)" if row['init'] == 'random' else row['init']
    if row.get('error'):
      name += ' [skipped: see results.json]'
    lines.append('| ' + ' | '.join([name, probe, knn] + cols + [wall]) + ' |')
  n = len(r['seeds'])
  notes = [
      '', f"Test top-1 (%). Fine-tuning: mean +- std over {n} {'folds' if r['subsets'] == 'kfold' else 'subsets'} "
      "(the same for every init), in round brackets the difference from scratch" +
      (f", in square brackets the {', '.join(key for key, _ in grid)} chosen on the validation images (from "
       f"{' x '.join('{' + ', '.join(show(v) for v in choices) + '}' for _, choices in grid)})" if grid else '') +
      ". The "
      "random init's probe and k-NN are of an untrained backbone; its fine-tuning cells are the from-scratch "
      "baseline. {k of n diverged}: cells that stopped on a non-finite loss, left out of the mean and of the "
      "difference from scratch (taken then over the subsets both scored); a selection value that diverges loses "
      "([...; all diverged]: every value did, the first was taken). (k of n cells so far): a fraction under way, "
      "its mean over those cells and no difference from scratch (other subsets). Validation images: a class-stratified "
      f"{100 * r['protocol']['val_fraction']:g}% of the training images, the same for every init, never trained "
      "on (by a pretext run, a probe or a fine-tuning cell); the "
      "probe's layer, L2 strength and epoch and the fine-tuning hyper-parameters are chosen on them; the test split "
      'is scored once '
      f"per cell. Total wall time recorded: {duration(r['total_wall_s'])} ({cpu_note(r)}).", '']
  only = r['protocol'].get('only')
  if only:
    notes[-1:-1] = ['', f"This run: {', '.join(only)} beside scratch only (benchmark.only); the targets below are "
                        'judged among these inits alone.']
  combination = r.get('combination') or {}
  if combination.get('spec'):
    notes[-1:-1] = ['', f"combination: {' + '.join(combination['inits'])} ({combination['rule']}; "
                        f"{combination['spec']})."]
  return '\n'.join(lines + notes + targets_table(r) + paired_table(r) + lowshot_table(r) + probe_layers_table(r) +
                   measured_by(r))


def _self_supervised(r: dict[str, Any]) -> list[dict[str, Any]]:
  labelled = set(r['protocol'].get('labelled', ()))
  return [row for row in r['inits'] if row['init'] != 'random' and row['init'] not in labelled]


def _absent(r: dict[str, Any], fraction: float) -> str:
  """What a fine-tuning target without cells says: they are to come, or this run has not that fraction."""
  if 'fractions' in r and not any(abs(float(g) - float(fraction)) < 1e-12 for g in r['fractions']):
    return 'not in this run (benchmark.fractions)'
  return 'not yet'


def check_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
  """``protocol.targets`` against the results: per target its text, what was measured and ``met`` (True, False,
  or None while its cells are not all done: then the measured text says "so far"). A target on "the best
  self-supervised init" is judged by the init the validation images choose (the best validation probe; at a
  fine-tuning fraction the best selection cell of the selection fraction that fraction takes, else the best
  validation probe), the best on the test split beside it: the maximum of many inits' test scores flatters."""
  t = r['protocol'].get('targets') or {}
  ssl = [row for row in _self_supervised(r) if not row.get('error')]
  if t and not ssl:
    return [{'target': 'every target', 'measured': 'no self-supervised init in this run', 'met': None}]
  out = []
  if 'probe' in t:
    probed = [row for row in ssl if row['probe_top1'] is not None]
    text = f"best self-supervised linear probe >= {100 * t['probe']:.1f}%"
    if not probed:
      out.append({'target': text, 'measured': 'not yet', 'met': None})
    else:
      val = max(probed, key=_val_probe)
      test = max(probed, key=lambda row: row['probe_top1'])
      complete = len(probed) == len(ssl)
      out.append({'target': text, 'met': bool(val['probe_top1'] >= t['probe']) if complete else None,
                  'measured': ('' if complete else f'so far ({len(probed)} of {len(ssl)} inits): ') +
                              f"{val['init']} {100 * val['probe_top1']:.2f} ({val['best_layer']}; chosen on "
                              f"validation); best on test: {test['init']} {100 * test['probe_top1']:.2f}"})
  scratch_row = next((row for row in r['inits'] if row['init'] == 'random'), {'finetune': {}})
  scratch = scratch_row['finetune']
  expected = expected_cells(r)
  select = sorted(float(f) for f in r['protocol'].get('select', {}).get('fractions', ()))
  for fraction, points in t.get('over_scratch', ()):
    f = f'{float(fraction):g}'
    text = f'{100 * float(fraction):g}% labels: best self-supervised fine-tuning >= scratch + {100 * points:.1f}'
    done = [row for row in ssl if row['finetune'].get(f, {}).get('n')]
    if not scratch.get(f, {}).get('n') or not done:
      out.append({'target': text, 'measured': _absent(r, fraction), 'met': None})
      continue
    base = scratch[f]['mean']
    at = f"{max((g for g in select if g <= float(fraction)), default=select[0]):g}" if select else None

    def on_val(row, at=at):
      vals = [v for k, v in row.get('select_val', {}).items() if k.split('/')[0] == at]
      return (1, max(vals)) if vals else (0, _val_probe(row))   # a selection cell first, else the probe

    val = max(done, key=on_val)
    how = 'chosen on validation' if on_val(val)[0] else 'chosen by its validation probe'
    test = max(done, key=lambda row, f=f: row['finetune'][f]['mean'])
    complete = all(fraction_complete(row, f, expected) for row in ssl + [scratch_row])
    gain = _gain(r, val, f, base, complete)
    out.append({'target': text, 'met': bool(gain >= points - 1e-12) if complete and gain is not None else None,
                'measured': ('' if complete else _SO_FAR) +
                            f"scratch {100 * base:.2f}; {val['init']} {100 * val['finetune'][f]['mean']:.2f} "
                            f"({_points(gain)}; {how}); best on test: {test['init']} "
                            f"{100 * test['finetune'][f]['mean']:.2f} "
                            f"({_points(_gain(r, test, f, base, complete))})"})
  for fraction, points in t.get('below_scratch', ()):
    f = f'{float(fraction):g}'
    text = f'{100 * float(fraction):g}% labels: no init more than {100 * points:.1f} points below scratch'
    others = [row for row in r['inits'] if row['init'] != 'random' and not row.get('error')]
    done = [row for row in others if row['finetune'].get(f, {}).get('n')]
    if not scratch.get(f, {}).get('n') or not done:
      out.append({'target': text, 'measured': _absent(r, fraction), 'met': None})
      continue
    complete = all(fraction_complete(row, f, expected) for row in others + [scratch_row])
    gains = {row['init']: _gain(r, row, f, scratch[f]['mean'], complete) for row in done}
    worst = min(done, key=lambda row, gains=gains: float('inf') if gains[row['init']] is None else gains[row['init']])
    drop = gains[worst['init']]
    out.append({'target': text, 'met': bool(drop >= -points - 1e-12) if complete and drop is not None else None,
                'measured': ('' if complete else _SO_FAR) +
                            f"scratch {100 * scratch[f]['mean']:.2f}; lowest: {worst['init']} "
                            f"{100 * worst['finetune'][f]['mean']:.2f} ({_points(drop)}; {len(done)} inits)"})
  return out


_SO_FAR = 'so far (cells to come; differences over the subsets both have): '


def _gain(r: dict[str, Any], row: dict[str, Any], f: str, base: float, complete: bool) -> float | None:
  """``row``'s fine-tuning at ``f`` less scratch's: the means' difference once every cell is done and none of
  either diverged, else the mean difference over the subsets (seeds) both scored (other subsets would not
  compare); None where they share none."""
  scratch = next((x for x in r['inits'] if x['init'] == 'random'), {'finetune': {}})['finetune'].get(f, {})
  diverged = row['finetune'][f].get('diverged') or scratch.get('diverged')
  if (complete and not diverged) or not r.get('cells'):
    return row['finetune'][f]['mean'] - base
  scores = cell_scores(r)
  mine, base = scores.get((row['init'], f), {}), scores.get(('random', f), {})
  diffs = [v - base[seed] for seed, v in mine.items() if v is not None and base.get(seed) is not None]
  return sum(diffs) / len(diffs) if diffs else None


def cell_scores(r: dict[str, Any]) -> dict[tuple[str, str], dict[Any, float | None]]:
  """The test cells' scores by (init, fraction as '0.01') and seed; None for a cell that diverged."""
  metric = r.get('metric', 'classify/top1')
  scores: dict[tuple[str, str], dict[Any, float | None]] = {}
  for c in r.get('cells') or ():
    scores.setdefault((c['init'], f"{c['fraction']:g}"), {})[c['seed']] = c.get(metric)
  return scores


def _points(gain: float | None) -> str:
  return 'no subset in common yet' if gain is None else f'{100 * gain:+.2f}'


def fraction_complete(row: dict[str, Any], f: str, expected: dict[str, int]) -> bool:
  """Whether ``row``'s fine-tuning cells at fraction ``f`` are all done (scored or diverged), ``expected`` from
  :func:`expected_cells`."""
  return _cells_done(row, f) >= expected.get(f, 0)


def _cells_done(row: dict[str, Any], f: str) -> int:
  c = row['finetune'].get(f, {})
  return c.get('n', 0) + c.get('diverged', 0)


def _val_probe(row: dict[str, Any]) -> float:
  return row['probe_layers_val'][row['best_layer']] if row.get('best_layer') else float('-inf')


def expected_cells(r: dict[str, Any]) -> dict[str, int]:
  """Cells per init a fraction has when complete: as the benchmark counted them (``expected_cells``), else every
  seed (k-fold, in a results.json written before it counted: the most any init has)."""
  if r.get('expected_cells'):
    return dict(r['expected_cells'])
  fractions = {f for row in r['inits'] for f in row['finetune']}
  if r.get('subsets') == 'kfold':
    return {f: max(_cells_done(row, f) for row in r['inits'] if f in row['finetune']) for f in fractions}
  return {f: len(r.get('seeds', ())) for f in fractions}


def targets_table(r: dict[str, Any]) -> list[str]:
  """The targets of :func:`check_targets` as a table; [] when the config sets none."""
  checked = r.get('targets') or check_targets(r)
  if not checked:
    return []
  lines = ['', '| target | measured (test top-1, %) | |', '| --- | --- | --- |']
  for t in checked:
    lines.append(f"| {t['target']} | {t['measured']} | "
                 f"{'-' if t['met'] is None else 'met' if t['met'] else 'not met'} |")
  return lines + ['', 'Targets (benchmark.targets): judged by the self-supervised init the validation images '
                  'choose (the best validation probe; the best selection cell at that fraction); the best of all '
                  'inits on the test split is beside it, not chosen by it.', '']


def measured_by(r: dict[str, Any]) -> list[str]:
  """Who measured: the calls of calls.jsonl (dates, command, code, machine); [] when none was recorded."""
  calls = r.get('calls') or []
  if not calls:
    return []

  def distinct(key):
    return list(dict.fromkeys(str(c.get(key)) for c in calls))

  machines = list(dict.fromkeys(
      f"{c.get('cpu')} ({c.get('cores')} cores, {c.get('memory_gib')} GiB; {c.get('devices')}), jax {c.get('jax')}"
      for c in calls))
  commits = list(dict.fromkeys(f"{str(c.get('commit'))[:7]}{' (with changes)' if c.get('changed_files') else ''}"
                               for c in calls))
  return ['', f"Measured by {len(calls)} call{'s' if len(calls) > 1 else ''} of "
          f"{' / '.join(f'`{cmd}`' for cmd in distinct('command'))}, the first started {calls[0]['started']}, the "
          f"last {calls[-1]['started']}; results written {r.get('written', '?')}. Machine: {'; '.join(machines)}. "
          f"Code: jaxssl {', '.join(commits)} (calls.jsonl has each call's).", '']


def paired_differences(r: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, list[float | None]]]]:
  """Each init's fine-tuning less scratch's on the same subset (the subsets are the same for every init, so the
  differences pair: the subset's own difficulty cancels): the fractions ('0.01') some init other than scratch has a
  cell at, and per init (not scratch) and fraction the difference of each subset in seed order, None where this
  init or scratch did not score it (under way, or a cell that diverged). A k-fold fraction has the folds some init
  has (a large fraction has fewer than the seeds)."""
  scores = cell_scores(r)
  fractions = [f'{f:g}' for f in r.get('fractions', ()) if any(
      (row['init'], f'{f:g}') in scores for row in r['inits'] if row['init'] != 'random')]
  kfold = r.get('subsets') == 'kfold'
  out: dict[str, dict[str, list[float | None]]] = {}
  for row in r['inits']:
    if row['init'] == 'random':
      continue
    for f in fractions:
      mine, base = scores.get((row['init'], f)), scores.get(('random', f), {})
      seeds = sorted({seed for (_, g), got in scores.items() if g == f for seed in got}) if kfold else r['seeds']
      out.setdefault(row['init'], {})[f] = [
          None if not mine or mine.get(s) is None or base.get(s) is None else mine[s] - base[s] for s in seeds]
  return fractions, out


def paired_table(r: dict[str, Any]) -> list[str]:
  """:func:`paired_differences` as a table, per fraction their mean over the subsets both scored and each
  subset's ('-': not scored by both); [] without cells."""
  fractions, diffs = paired_differences(r)
  if not fractions:
    return []
  kfold = r.get('subsets') == 'kfold'
  head = ['init'] + [f'fine-tuned on {100 * float(f):g}%: mean (per {"fold" if kfold else "subset"})'
                     for f in fractions]
  lines = ['', '| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  for init, by_fraction in diffs.items():
    cols = []
    for f in fractions:
      both = [d for d in by_fraction[f] if d is not None]
      cols.append('-' if not both else f'{_signed(sum(both) / len(both))} (' +
                  ', '.join('-' if d is None else _signed(d) for d in by_fraction[f]) + ')')
    lines.append('| ' + ' | '.join([init] + cols) + ' |')
  what = 'fold' if kfold else 'subset'
  return lines + ['', f'Fine-tuned, less scratch on the same {what}: test top-1 points, the mean over the {what}s '
                  f"both scored and, in round brackets, each {what}'s (in seed order); -: a {what} not scored by "
                  'both (under way, or a cell that diverged).', '']


def _signed(x: float) -> str:
  """A difference in points, one decimal, signed; one that rounds to zero is +0.0 (not -0.0)."""
  return f'{round(100 * x, 1) + 0.0:+.1f}'


def pretext_metrics(pretext: dict[str, Any] | None) -> dict[str, float]:
  """A pretext run's held-out figure on each of its own tasks: per task (a metric's prefix; not an in-run probe's)
  the first of :data:`PRETEXT_METRICS`' endings it has."""
  pretext = pretext or {}
  out = {}
  for task in dict.fromkeys(k.split('/')[0] for k in pretext if '/' in k and k.split('/')[0] not in IN_RUN_PROBES):
    end = next((e for e in PRETEXT_METRICS if f'{task}{e}' in pretext), None)
    if end is not None:
      out[f'{task}{end}'] = pretext[f'{task}{end}']
  return out


def probe_layers_table(r: dict[str, Any]) -> list[str]:
  """The per-layer linear probe of every init (test top-1; probe_layers.png's figures), beside its pretext run's
  figure on its own task, the layer the validation images chose and the k-NN on it; [] before any probe."""
  layers = list(dict.fromkeys(layer for row in r['inits'] for layer in row.get('probe_layers') or {}))
  if not layers:
    return []
  head = ['init', 'pretext (held-out, own task)', *layers, 'chosen on val', 'k-NN']
  lines = ['', '| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  for row in r['inits']:
    got = row.get('probe_layers') or {}
    pretext = ', '.join(f'{k} {v:.3f}' for k, v in pretext_metrics(row.get('pretext')).items()) or '-'
    chosen = f"{row['best_layer']} {100 * row['probe_top1']:.2f}" if row.get('probe_top1') is not None else '-'
    knn = f"{100 * row['knn_top1']:.1f}" if row.get('knn_top1') is not None else '-'
    lines.append('| ' + ' | '.join([f"{row['init']} (untrained)" if row['init'] == 'random' else row['init'],
                                    pretext, *(f'{100 * got[l]:.1f}' if l in got else '-' for l in layers),
                                    chosen, knn]) + ' |')
  return lines + ['', 'Linear probe per layer: test top-1 (%), its L2 strength and epoch chosen on the validation '
                  'images; the layer they chose (its test top-1 to two decimals), and the weighted k-NN on it (%). '
                  'Pretext: the run\'s last held-out evaluation on its own task, in that metric\'s units (accuracy as '
                  'a fraction, PSNR in dB).', '']


def lowshot_table(r: dict[str, Any]) -> list[str]:
  """The frozen-feature table: per init, the linear probe fitted on each fine-tuning subset's labels only, its
  layer chosen on validation per subset, mean +- std over the subsets, with the difference from the random
  backbone's and the layers chosen; [] when none ran."""
  low = sorted({f for row in r['inits'] for f in row.get('lowshot', {})}, key=float)
  if not low:
    return []
  random = next((row['lowshot'] for row in r['inits'] if row['init'] == 'random'), {})
  head = ['init'] + [f'probe on {100 * float(f):g}% of the labels [layer]' for f in low]
  lines = ['', '| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  for row in r['inits']:
    if not row.get('lowshot'):
      continue
    cols = []
    for f in low:
      c = row['lowshot'].get(f)
      text = '-' if c is None else f"{100 * c['mean']:.1f} +- {100 * c['std']:.1f}"
      if c is not None and row['init'] != 'random' and f in random:
        text += f" ({100 * (c['mean'] - random[f]['mean']):+.1f})"
      if c is not None and c.get('layers'):
        text += f" [{layers_text(c['layers'])}]"
      cols.append(text)
    lines.append('| ' + ' | '.join([f"{row['init']} (untrained)" if row['init'] == 'random' else row['init']] + cols)
                 + ' |')
  return lines + ['', 'Few labels, frozen features: a linear probe of the backbone\'s layers fitted on the labels of '
                  'each fine-tuning subset only (the same images as its fine-tuning cells), its layer, L2 strength '
                  'and epoch chosen on the validation images for each subset; test top-1 (%), mean +- std over the '
                  'subsets, in round brackets the difference from the untrained backbone\'s, in square brackets the '
                  'layers chosen.', '']


def csv_text(r: dict[str, Any]) -> str:
  """results.csv: a row per init (best layer's probe, k-NN, the frozen-feature probe and fine-tuning at each
  fraction with the values chosen for it, a column per grid key, the seconds of each part)."""
  fr = [f'{f:g}' for f in r['fractions']]
  table = io.StringIO(newline='')
  w = csv.writer(table)
  low = [f for f in fr if float(f) < 1]
  parts = ('pretrain', 'probe', 'knn', 'lowshot', 'finetune')
  keys = [short_key(key) for key, _ in r['protocol'].get('select', {}).get('grid', ())]   # chosen on val
  w.writerow(['init', 'best_layer', 'probe_top1', 'knn_top1'] +
             [f'probe{f}_{s}' for f in low for s in ('mean', 'std', 'layers')] +
             [f'ft{f}_{s}' for f in fr for s in ('mean', 'std', 'n', *(f'chosen_{k}' for k in keys))] +
             [f'{p}_s' for p in parts])
  for row in r['inits']:
    ft = []
    for f in low:
      c = row['lowshot'].get(f, {})
      ft += [num(c.get('mean')), num(c.get('std')), ' '.join(c.get('layers', []))]
    for f in fr:
      c = row['finetune'].get(f, {})
      chosen = row['chosen'].get(f)
      ft += [num(c.get('mean')), num(c.get('std')), c.get('n', 0)] + \
          ([''] * len(keys) if chosen is None else [show(v) for v in chosen])
    w.writerow([row['init'], row['best_layer'] or '', num(row['probe_top1']), num(row['knn_top1'])] + ft +
               [num(row['wall_s'][p], 0) for p in parts])
  return table.getvalue()
