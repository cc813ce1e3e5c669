r"""One table across runs: what each run was and what it scored.

  python -m jaxssl.report runs/fmnist_supervised runs/linear_conv2 runs/knn --out reports/
  python -m jaxssl.report runs/ --filters     # every run below runs/, and filters.png for runs that lack one

A RUN_DIR is a workdir of ``python -m jaxssl.main`` (it has ``config.json``, or ``knn_<split>.json``); a folder that
is not one is searched for workdirs below it (a study's ``cells/``). Each run gives one row: its config (dataset,
model, tasks and probed layer, where its backbone came from, what trained, the labelled fraction), steps, the final
eval metrics (``final_metrics.json``), the k-NN probe (``knn_<split>.json``), the latest ``--mode=eval`` per split
(``eval_<split>_step<N>.json``), the best evaluation of the headline metric over training (``metrics.jsonl``),
training throughput and time, and links to the run's pictures. Folders without results are listed with the reason.
Writes ``summary.md``, ``summary.csv`` and ``summary.png`` (the headline metric per run as bars, the best evaluation
marked) into ``--out`` (default: the runs' common parent folder).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import posixpath
import re
import sys
from typing import Any

from jaxssl import files

# Metrics that say how good a run is, in the order the headline is picked when --metric is not given.
_HEADLINE_SUFFIXES = ('top1', '/acc', 'accuracy', 'macro_f1', 'f1', 'exact')
_PICTURES = ('curves.png', 'filters.png', 'embedding.png', 'confusion.png')
_SKIP_DIRS = ('checkpoints', 'tensorboard', 'artifacts')


def _read_json(path: str) -> Any:
  """A run's JSON file; one that does not parse (torn by a kill, or edited) counts as absent, with a warning, so
  that one broken run does not stop the report of the others."""
  try:
    return json.loads(files.read_text(path))
  except ValueError as e:
    print(f'warning: {path} is not valid JSON ({e}); left out', file=sys.stderr)
    return {}


def _is_run(files) -> bool:
  """A training workdir has config.json; a --mode=knn workdir may have only knn_<split>.json."""
  return 'config.json' in files or any(f.startswith('knn_') and f.endswith('.json') for f in files)


def find_runs(paths) -> tuple[list[str], list[tuple[str, str]]]:
  """(run directories, [(path, why it is not one)]): the given ones, or the workdirs found below them."""
  runs, skipped = [], []
  for path in paths:
    if not files.isdir(path):
      skipped.append((path, 'not a directory'))
    elif _is_run(files.listdir(path)):
      runs.append(path)
    else:
      found = []
      for root, dirs, names in files.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        if _is_run(names):
          found.append(root)
          dirs[:] = []  # a run's own subfolders are not runs
      runs += found
      if not found:
        skipped.append((path, 'no config.json or knn_*.json in it or below it: not a jaxssl workdir'))
  return list(dict.fromkeys(runs)), skipped


def short_names(runs) -> list[str]:
  """The fewest trailing path components that tell the runs apart."""
  parts = [_norm(files.abspath(r)).split('/' if files.is_remote(r) else os.sep) for r in runs]
  for n in range(1, max((len(p) for p in parts), default=1) + 1):
    names = ['/'.join(p[-n:]) for p in parts]
    if len(set(names)) == len(names):
      return names
  return [_norm(r) for r in runs]


def _norm(path: str) -> str:
  """``os.path.normpath`` of a local path; a URL as it is (normpath would make ``gs://`` ``gs:/``)."""
  return files.abspath(path) if files.is_remote(path) else os.path.normpath(path)


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def headline_metric(metrics: dict[str, Any], wanted: str = '') -> str | None:
  """``wanted`` if the run has it; else the first accuracy-like metric, the final evaluation's before a
  ``--mode=eval`` or k-NN one, classify/top1 first."""
  if wanted:
    return wanted if _is_number(metrics.get(wanted)) else None
  keys = sorted((k for k, v in metrics.items() if _is_number(v)),
                key=lambda k: (k.startswith(('eval_', 'knn_')), not k.startswith('classify/'), k))
  for suffix in _HEADLINE_SUFFIXES:
    for key in keys:
      if key.endswith(suffix):
        return key
  return None


def _describe_config(config: dict[str, Any], run_dir: str, knn: dict[str, Any]) -> dict[str, Any]:
  """What the run was, from its config.json (a --mode=knn folder has none: its knn_<split>.json tells)."""
  data, model, optim = config.get('data', {}), config.get('model', {}), config.get('optim', {})
  options = ', '.join(f'{k}={v}' for k, v in sorted((model.get('options') or {}).items())
                      if v not in (0, '', None, 'auto', 'float32'))
  tasks = []
  for name, t in (config.get('tasks') or {}).items():
    layer = '/'.join(x for x in (t.get('feature'), t.get('pool') if t.get('feature') else '') if x)
    weight = '' if float(t.get('weight', 1.0)) == 1.0 else f" x{t['weight']:g}"
    tasks.append(f"{name}{'@' + layer if layer else ''}{' frozen' if t.get('freeze_backbone') else ''}{weight}")
  init = ''
  if files.exists(files.join(run_dir, 'init_from.json')):
    init = _read_json(files.join(run_dir, 'init_from.json')).get('checkpoint', '')
  init = init or config.get('init_from') or ''
  if knn and not config:
    init = (knn.get('backbone') or {}).get('checkpoint', '')
    tasks = [f"knn@{knn.get('feature')}/{knn.get('pool')}"]
  trainable = optim.get('trainable', 'all') if optim else ''
  if trainable not in ('heads', '') and float(optim.get('backbone_lr_scale', 1.0)) != 1.0:
    trainable += f" (backbone lr x{optim['backbone_lr_scale']:g})"
  labels = []
  if float(data.get('train_fraction', 1.0)) < 1.0:
    which = 'fold' if data.get('subset_mode') == 'kfold' else 'subset seed'
    labels.append(f"{100 * data['train_fraction']:g}% ({which} {data.get('subset_seed', 0)})")
  if data.get('train_limit'):
    labels.append(f"first {data['train_limit']}")
  return {'dataset': data.get('name', knn.get('dataset', '')),
          'model': model.get('name', knn.get('model', '')) + (f' ({options})' if options else ''),
          'mode': config.get('mode', 'knn' if knn else ''), 'tasks': ', '.join(tasks),
          'init': _short_init(init), 'trainable': trainable, 'labels': ', '.join(labels) or 'all',
          'split': data.get('eval_split', knn.get('split', '')), 'batch_size': config.get('batch_size')}


def _short_init(path: str) -> str:
  """A checkpoint path as <workdir name>@<step>; '' = scratch."""
  if not path:
    return 'scratch'
  m = re.match(r'(.*)/checkpoints/(\d+)/?$', _norm(path))
  return f'{files.basename(m.group(1))}@{m.group(2)}' if m else files.basename(_norm(path))


def _throughput(rows, batch_size) -> dict[str, Any]:
  """Median train images/s and the time spent in train steps (compile and evaluation excluded), from the
  progress rows of metrics.jsonl (a resumed run logs some steps twice: the last one counts)."""
  by_step = {r['step']: r for r in rows if r.get('split') == 'train' and 'images_per_s' in r}
  if not by_step or not batch_size:
    return {}
  rates, seconds, previous = [], 0.0, 0
  for step in sorted(by_step):
    rate = by_step[step]['images_per_s']
    if rate > 0:
      rates.append(rate)
      seconds += (step - previous) * batch_size / rate
    previous = step
  if not rates:
    return {}
  return {'images_per_s': float(sorted(rates)[len(rates) // 2]), 'train_minutes': seconds / 60}


def run_row(run_dir: str, metric: str = '') -> tuple[dict[str, Any] | None, str]:
  """One run's row, or (None, why it has no results)."""
  from jaxssl.runlog import read_metrics  # pylint: disable=import-outside-toplevel
  config_path = files.join(run_dir, 'config.json')
  config = _read_json(config_path) if files.exists(config_path) else {}
  rows = read_metrics(run_dir)
  final_path = files.join(run_dir, 'final_metrics.json')
  final = _read_json(final_path) if files.exists(final_path) else {}
  knn_files = files.glob(run_dir, 'knn_*.json')
  row = {'run': run_dir, **_describe_config(config, run_dir, _read_json(knn_files[0]) if knn_files else {})}
  eval_files = files.glob(run_dir, 'eval_*_step*.json')
  evals = [r for r in rows if r.get('split') not in (None, 'train')]
  last_step = max((r['step'] for r in rows), default=None)
  if not (final or knn_files or eval_files or evals):
    return None, ('no results: no final_metrics.json, knn_*.json, eval_*.json or evaluation in metrics.jsonl'
                  + (f' (training logged up to step {last_step})' if last_step is not None else ''))

  total = config.get('total_steps') or None
  row['steps'] = final.get('step', last_step)
  row['status'] = ('finished' if final else 'knn probe' if knn_files and not rows
                   else f'unfinished ({last_step}/{total or "?"})' if last_step is not None else 'evaluated')
  results: dict[str, Any] = {k: v for k, v in final.items() if _is_number(v) and k != 'step'}
  for path in knn_files:
    knn = _read_json(path)
    split = files.basename(path)[len('knn_'):-len('.json')]
    results.update({f'knn_{split}/{k}': knn[k] for k in ('top1', 'top5') if _is_number(knn.get(k))})
    results[f'knn_{split}/layer'] = f"{knn.get('feature')}/{knn.get('pool')}"
  latest: dict[str, tuple[int, str]] = {}
  for path in eval_files:
    m = re.match(r'eval_(.+)_step(\d+)\.json$', files.basename(path))
    if m and int(m.group(2)) >= latest.get(m.group(1), (-1, ''))[0]:
      latest[m.group(1)] = (int(m.group(2)), path)
  for split, (step, path) in sorted(latest.items()):
    results[f'eval_{split}/step'] = step
    results.update({f'eval_{split}/{k}': v for k, v in _read_json(path).items() if _is_number(v) and k != 'step'})
  if not final and evals:  # an unfinished run: its latest evaluation stands in for the final one
    last = max(evals, key=lambda r: r['step'])
    results.update({k: v for k, v in last.items() if _is_number(v) and k != 'step'})

  head = headline_metric(results, metric)
  row['metric'], row['value'] = head or '', results.get(head) if head else None
  best = [r for r in evals if head and _is_number(r.get(head))]
  if best:
    sign = -1 if head.endswith('loss') else 1  # the earliest step that reached the best value
    pick = max(best, key=lambda r: (sign * r[head], -r['step']))
    row['best'], row['best_step'] = pick[head], pick['step']
  row.update(_throughput(rows, row.get('batch_size')))
  row['dir'] = run_dir
  row['pictures'] = [files.join(run_dir, p) for p in _PICTURES if files.exists(files.join(run_dir, p))]
  row['results'] = results
  return row, ''


# ---- Writing the table.

_ID_COLUMNS = ('run', 'dataset', 'model', 'mode', 'tasks', 'init', 'trainable', 'labels', 'split', 'steps',
               'status', 'metric', 'value', 'best', 'best_step')
_TAIL_COLUMNS = ('images_per_s', 'train_minutes', 'dir')


def _columns(rows) -> list[str]:
  results = list(dict.fromkeys(k for r in rows for k in r['results']))
  return [*_ID_COLUMNS, *results, *_TAIL_COLUMNS]


def _flat(row) -> dict[str, Any]:
  return {**{k: v for k, v in row.items() if k not in ('results', 'pictures')}, **row['results']}


def _cell(v, column: str = '') -> str:
  if v is None or v == '':
    return ''
  if isinstance(v, float):
    return f'{v:.0f}' if column == 'images_per_s' else f'{v:.1f}' if column == 'train_minutes' else f'{v:.4f}'
  return str(v).replace('|', '\\|')


def write_csv(rows, path: str) -> None:
  cols = _columns(rows)
  table = io.StringIO(newline='')
  w = csv.DictWriter(table, fieldnames=cols, extrasaction='ignore')
  w.writeheader()
  for row in rows:
    w.writerow({k: ('' if v is None else v) for k, v in _flat(row).items()})
  files.write_text(path, table.getvalue())


def write_markdown(rows, skipped, path: str, out_dir: str) -> None:
  """summary.md: the runs' table (columns that say something), with links to pictures and skipped folders."""
  results = {k for r in rows for k in r['results']}
  cols = [c for c in _columns(rows) if c != 'dir' and any(_flat(r).get(c) not in (None, '') for r in rows)
          and (c not in results or c.endswith((*_HEADLINE_SUFFIXES, '/layer', '/step')))]
  labels = {'value': 'final', 'best_step': 'best @ step', 'images_per_s': 'images/s',
            'train_minutes': 'train min'}
  lines = ['# Runs', '',
           '`value` is the headline `metric` of the final evaluation, `best` the best evaluation of it during '
           'training; `train min` counts train steps only (no compile, no evaluation). Accuracy-like metrics '
           'only: every metric is in summary.csv.', '',
           '| ' + ' | '.join([labels.get(c, c) for c in cols] + ['pictures']) + ' |',
           '|' + '---|' * (len(cols) + 1)]
  for row in rows:
    flat = _flat(row)
    links = ', '.join(f'[{os.path.splitext(files.basename(p))[0]}]({_link(p, out_dir)})' for p in row['pictures'])
    lines.append('| ' + ' | '.join([_cell(flat.get(c), c) for c in cols] + [links]) + ' |')
  if skipped:
    lines += ['', '## Without results', ''] + [f'- `{p}`: {why}' for p, why in skipped]
  files.write_text(path, '\n'.join(lines) + '\n')


def _link(path: str, out_dir: str) -> str:
  """``path`` relative to ``out_dir`` where both are on one disk or in one bucket; else ``path`` whole."""
  if not files.is_remote(path) and not files.is_remote(out_dir):
    return os.path.relpath(path, out_dir)
  path, out_dir = files.abspath(path), files.abspath(out_dir)
  bucket = path.split('/')[:3]  # ['gs:', '', '<bucket>']
  if out_dir.split('/')[:3] != bucket:
    return path
  return posixpath.relpath(path[len('/'.join(bucket)):] or '/', out_dir[len('/'.join(bucket)):] or '/')


def write_chart(rows, path: str) -> str | None:
  """Horizontal bars: each run's headline value (labelled with the metric), the best evaluation as a tick."""
  shown = [r for r in rows if _is_number(r.get('value'))]
  if not shown:
    return None
  from jaxssl.eval import plots  # pylint: disable=import-outside-toplevel  # sets the Agg backend
  plt = plots.plt
  fig, ax = plt.subplots(figsize=(8, 0.9 + 0.42 * len(shown)))
  y = list(range(len(shown)))[::-1]
  ax.barh(y, [r['value'] for r in shown], color='#4a78b5', height=0.6)
  best = [(yy, r['best']) for yy, r in zip(y, shown) if _is_number(r.get('best'))]
  if best:
    ax.plot([b for _, b in best], [yy for yy, _ in best], '|', color='black', ms=14, mew=2, label='best eval')
    ax.legend(fontsize=7, loc='lower right')
  for yy, r in zip(y, shown):
    ax.text(r['value'], yy, f" {r['value']:.4f} {r['metric']}", va='center', fontsize=7)
  ax.set_yticks(y, [r['run'] for r in shown], fontsize=7)
  top = max(max(r['value'] for r in shown), max((b for _, b in best), default=0))
  ax.set_xlim(0, top * 1.35 if top > 0 else 1)
  ax.set_xlabel('final evaluation (headline metric)')
  ax.grid(alpha=0.3, axis='x')
  fig.tight_layout()
  files.save_figure(fig, path, dpi=110)
  plt.close(fig)
  return path


def report(paths, out_dir: str | None = None, metric: str = '', filters: bool = False) -> dict[str, Any]:
  """Rows of every run found in ``paths``; writes summary.md|csv|png into ``out_dir`` (nothing when no run is
  found or none can be read: ``rows`` is then empty)."""
  runs, skipped = find_runs(paths)
  if out_dir is None:
    parents = [files.dirname(files.abspath(r)) for r in runs] or [files.abspath(p) for p in paths]
    try:
      out_dir = files.commonpath(parents) if parents else '.'
    except ValueError:  # runs on this disk and in a bucket, or in two kinds of store: no common parent
      out_dir = '.'
  rows = []
  for run_dir, name in zip(runs, short_names(runs)):
    row, why = run_row(run_dir, metric)
    if row is None:
      skipped.append((run_dir, why))
      continue
    row['run'] = name
    if filters and not any(p.endswith('filters.png') for p in row['pictures']):
      made, why = _checkpoint_filters(run_dir, out_dir, name)
      if made:
        row['pictures'].append(made)
      elif why:
        print(f'{name}: no filters picture: {why}', file=sys.stderr)
    rows.append(row)
  if not rows:
    return {'rows': rows, 'skipped': skipped, 'out': out_dir}
  try:
    files.makedirs(out_dir)
    write_csv(rows, files.join(out_dir, 'summary.csv'))
    write_markdown(rows, skipped, files.join(out_dir, 'summary.md'), out_dir)
    write_chart(rows, files.join(out_dir, 'summary.png'))
  except OSError as e:   # the report's folder: a file, or not writable (a run that cannot be read is skipped)
    raise ReportWriteError(f'cannot write the report into {e.filename or out_dir}: {e.strerror or e}; give --out '
                           'a folder it may write in') from e
  return {'rows': rows, 'skipped': skipped, 'out': out_dir}


class ReportWriteError(Exception):
  """The report's own files could not be written: one line."""


def checkpoint_filters(run_dir: str) -> tuple[str, Any]:
  """(what it is, kernel) of the first conv of a run directory's latest checkpoint."""
  from jaxssl.eval import filters  # pylint: disable=import-outside-toplevel
  from jaxssl.train import transfer  # pylint: disable=import-outside-toplevel
  checkpoint = transfer.resolve_checkpoint(run_dir)
  found = filters.first_conv(transfer.read_backbone(checkpoint))
  if found is None:
    raise ValueError(f'the backbone in {checkpoint} has no conv layer')
  model = ''
  if files.exists(files.join(run_dir, 'config.json')):
    model = _read_json(files.join(run_dir, 'config.json')).get('model', {}).get('name', '') + ' '
  return f'{model}{"/".join(found[0])} at step {files.basename(checkpoint)}', found[1]


def _checkpoint_filters(run_dir: str, out_dir: str, name: str) -> tuple[str | None, str]:
  """The filters picture of a run's latest checkpoint, written as ``<out>/filters/<run>/filters.png`` (run
  folders are left as they are); returns (its path or None, why not)."""
  from jaxssl.train import transfer  # pylint: disable=import-outside-toplevel
  if not transfer.has_checkpoint(run_dir):
    return None, ''
  from jaxssl.eval import filters  # pylint: disable=import-outside-toplevel
  try:
    what, kernel = checkpoint_filters(run_dir)
  except (ValueError, KeyError, FileNotFoundError) as e:
    return None, str(e)
  path = files.join(out_dir, 'filters', re.sub(r'[^\w.-]+', '_', name), 'filters.png')
  files.makedirs(files.dirname(path))
  return filters.write_filters(kernel, path, f'{name}: {what}'), ''


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m jaxssl.report', formatter_class=argparse.RawDescriptionHelpFormatter,
      description=__doc__.split('\n\n', 1)[1] if __doc__ else None)
  parser.add_argument('runs', nargs='+', metavar='RUN_DIR',
                      help='workdirs of jaxssl.main, or folders to search for them')
  parser.add_argument('--out', default=None, metavar='DIR',
                      help="where summary.md, summary.csv and summary.png go (default: the runs' common parent)")
  parser.add_argument('--metric', default='', metavar='NAME',
                      help='headline metric for every run, e.g. classify/top1 or knn_test/top1 (default: per run, '
                      'the first accuracy-like metric of its final evaluation)')
  parser.add_argument('--filters', action='store_true',
                      help='draw the first conv layer of the latest checkpoint of runs without filters.png '
                      '(into DIR/filters/)')
  args = parser.parse_args(argv)
  try:
    result = report(args.runs, args.out, args.metric, args.filters)
  except files.RemotePathError as e:  # a gs:// run folder without the [gcs] extra
    print(f'error: {e}', file=sys.stderr)
    return 2
  except ReportWriteError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for path, why in result['skipped']:
    print(f'skipped {path}: {why}', file=sys.stderr)
  if not result['rows']:
    print(f'error: no run to report in {" ".join(args.runs)} (a run is a workdir of python -m jaxssl.main, with '
          'its config.json and metrics); nothing written', file=sys.stderr)
    return 2
  if args.metric and not any(_is_number(r.get('value')) for r in result['rows']):
    names = sorted({k for r in result['rows'] for k, v in r['results'].items() if _is_number(v)})
    print(f"warning: no run has --metric {args.metric}; their metrics: {', '.join(names) or 'none'}",
          file=sys.stderr)
  out = result['out']
  print(f"{len(result['rows'])} run(s) -> {files.join(out, 'summary.md')}, summary.csv, summary.png")
  return 0


if __name__ == '__main__':
  sys.exit(main())
