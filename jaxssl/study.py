r"""Label-efficiency study: test accuracy against the fraction of labelled training images, per initialization.

  python -m jaxssl.study --config configs/fmnist_label_efficiency.py --workdir runs/fmnist_label_efficiency

Every cell (init x fraction x seed) is one ordinary training run of the config in
``<workdir>/cells/<init>_f<fraction>_s<seed>/``; a cell whose ``final_metrics.json`` exists is skipped, so
rerunning the command resumes the study (and a cell interrupted mid-run resumes from its checkpoint). The
labelled subset is class-stratified and depends only on (fraction, seed): every init sees the same images.
``study.subsets='kfold'`` makes the seeds disjoint stratified folds instead of random subsets (seed experiment
003's protocol; a fraction has only so many folds, e.g. 2 at 0.5: its cells beyond them are skipped and listed).
Writes ``results.csv`` (one row per cell), ``results.json`` (mean and std over seeds per init and fraction, and
each init's differences from the scratch init's cells on the same subsets), ``results.md`` (the table) and
``label_efficiency.png`` (the curves, and the differences beside them). Bad input stops it early, in one line: the
study block's values before anything is built, every init's backbone before the first cell trains,
``study.metric`` once the first cell is done.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from typing import Any


from jaxssl import cli, files


class StudyError(ValueError):
  """The study cannot go on as configured: an init whose backbone is not there, a metric its cells do not have.
  The message names the ``--config.study`` key to set; ``python -m jaxssl.study`` reports it as one line."""


def check_study(config) -> None:
  """The study block's values, before anything is built or written: ValueError with the key and what it may be
  (``python -m jaxssl.study`` reports it as ``error: bad config: ...``)."""
  from jaxssl.data.subsets import check_fractions  # pylint: disable=import-outside-toplevel
  s = config.study
  check_fractions(s.fractions, '--config.study.fractions')
  if not isinstance(s.seeds, (tuple, list)) or not s.seeds:
    raise ValueError(f'--config.study.seeds={s.seeds!r} must list at least one value: the subset seeds, e.g. (0, 1, 2)')
  if not s.inits:
    raise ValueError("--config.study.inits is empty: name at least one init, e.g. --config.study.inits.scratch=''")
  odd = [f'{k}={v!r}' for k, v in s.inits.items() if not isinstance(v, str)]
  if odd:
    raise ValueError(f'--config.study.inits: {", ".join(odd)}: an init is a path (a run\'s workdir, one of its '
                     "checkpoints, a weights file) or '' for scratch")


def check_inits(config, workdir: str | None = None) -> None:
  """Every init of ``study.inits`` resolves to a backbone as its cells will load it (a run's checkpoint: the
  same resolution and read; a weights file: the same checks), before the first cell trains: a later init's
  missing run used to stop the study only after the earlier cells' hours. StudyError naming
  ``--config.study.inits.<name>``, which the study sets as each cell's ``init_from``. An init whose cells in
  ``workdir`` are all finished is not checked: a rerun (more seeds, another metric) needs no backbone for them."""
  # pylint: disable=import-outside-toplevel  # jax and orbax: when the study runs
  from jaxssl.models import torchvision_weights
  from jaxssl.train import transfer
  # pylint: enable=import-outside-toplevel
  for name, init_from in config.study.inits.items():
    if not init_from:   # scratch
      continue
    if workdir and all(files.exists(files.join(workdir, 'cells', cell_name(name, float(f), int(seed)),
                                               'final_metrics.json'))
                       for f in config.study.fractions for seed in config.study.seeds):
      continue
    try:
      if torchvision_weights.is_weights_file(init_from):
        torchvision_weights.check_weights_config(init_from, config.init_step, config.model.name,
                                                 dict(config.model.options))
      else:
        transfer.read_backbone(transfer.resolve_checkpoint(init_from, config.init_step))
    except (FileNotFoundError, ValueError) as e:   # TransferError and WeightsError are ValueErrors
      key = f'--config.study.inits.{name}'
      # The cells' message, its fix said of the study's key: each cell's init_from is study.inits' value.
      first = "train that run first (the study config's docstring names the command that makes it) or "
      why = str(e).replace(f'init_from={init_from}', f'{key}={init_from}').replace(
          'point --config.init_from at', f'{first}point {key}=DIR at').replace('--config.init_from', key)
      raise StudyError(why if why.startswith(key) else f'{key}={init_from}: {why}') from None


def check_metric(metric: str, row: dict[str, Any], cell: str) -> None:
  """``study.metric`` is one of the numbers a cell's final_metrics.json has (known only once a cell is done: the
  evaluators name them); StudyError listing them."""
  if metric not in row:
    have = sorted(k for k in row if k not in ('init', 'fraction', 'seed', 'step'))
    raise StudyError(f'--config.study.metric={metric!r} is not a metric of the cells (cell {cell} has: '
                     f'{", ".join(have) or "none"}): set --config.study.metric to one of them and rerun the same '
                     'command (finished cells are kept, not trained again)')


def cell_name(init: str, fraction: float, seed: int) -> str:
  return f'{init}_f{fraction:g}_s{seed}'


def cell_config(config, init_from: str, fraction: float, seed: int, num_records: int, devices: int = 1,
                subset_size: int = 0):
  """The study's base config for one cell: its init, labelled subset and seed; enough steps for small subsets
  (``study.epochs`` over the subset, at least ``study.min_steps``), a batch no larger than the subset
  (``subset_size`` where known, e.g. a k-fold's, else fraction x ``num_records``) and a warmup of at least
  ``study.warmup_share`` of the steps."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    del c['study']
    c.init_from = init_from
    c.data.train_fraction = float(fraction)
    c.data.subset_seed = int(seed)
    c.data.subset_mode = str(config.study.get('subsets', 'random'))
    c.seed = int(seed)
    n = subset_size or max(1, int(round(fraction * num_records)))
    c.batch_size = max(devices, min(c.batch_size, n // devices * devices))
    c.total_steps = max(int(config.study.min_steps), int(round(config.study.epochs * n / c.batch_size)))
    # A warmup in epochs is no warmup on a small subset (0.5 epoch of 50 images: 0 steps); study.warmup_share
    # makes it at least that share of the cell's steps (a pretrained backbone at the full learning rate collapsed
    # to chance without one: docs/results.md).
    share = float(config.study.get('warmup_share', 0.0))
    per_epoch = max(1, n // c.batch_size)   # as jaxssl/train/experiment.py counts an epoch
    if share > 0 and c.optim.warmup_epochs * per_epoch < share * c.total_steps:
      c.optim.warmup_epochs = share * c.total_steps / per_epoch
    c.eval_every = 0
    c.checkpoint_every = max(1, min(c.checkpoint_every, c.total_steps))
  return c


def run_study(config, workdir: str) -> list[dict[str, Any]]:
  """Trains every (init, fraction, seed) cell not yet finished in ``workdir``, then writes the results."""
  import jax  # pylint: disable=import-outside-toplevel
  from jaxssl.data import datasets  # pylint: disable=import-outside-toplevel
  from jaxssl.train import loop  # pylint: disable=import-outside-toplevel
  from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
  from jaxssl.data import subsets  # pylint: disable=import-outside-toplevel
  check_study(config)
  check_inits(config, workdir)   # before the data is read and any cell trains
  info = datasets.get_dataset(config.data.name, config.data)
  train = datasets.load_split(info, config.data.train_split, config.data, config.data.train_limit)
  num_records = len(train)
  mode = str(config.study.get('subsets', 'random'))
  folds, sizes = subsets.fold_plan(train, config.study.fractions, mode, '--config.study.subsets')
  rows, skipped = [], []
  cells = []
  for init in config.study.inits:
    for f in config.study.fractions:
      for s in config.study.seeds:
        if mode == 'kfold' and s >= folds[f]:
          skipped.append({'init': init, 'fraction': float(f), 'seed': int(s),
                          'why': f'only {folds[f]} disjoint folds'})
        else:
          cells.append((init, f, s))
  if skipped:
    log(f'study: {len(skipped)} cells skipped, their fraction has fewer disjoint folds than seeds: '
        + ', '.join(sorted({f"{s['fraction']:g} ({folds[s['fraction']]} folds)" for s in skipped})))
  for i, (init, fraction, seed) in enumerate(cells):
    cell_dir = files.join(workdir, 'cells', cell_name(init, fraction, seed))
    final = files.join(cell_dir, 'final_metrics.json')
    if not files.exists(final):
      log(f'study cell {i + 1}/{len(cells)}: {cell_name(init, fraction, seed)}')
      c = cell_config(config, config.study.inits[init], fraction, seed, num_records, jax.device_count(),
                      subset_size=sizes.get(fraction, 0))
      result = loop.train_and_evaluate(c, cell_dir)
      if not result['finished']:
        if result['exit_code'] == loop.DIVERGED_EXIT_CODE:
          log(f'study stopped: cell {cell_name(init, fraction, seed)} diverged (see above); change the config and '
              'rerun the same command to continue')
        else:
          log('study interrupted; rerun the same command to continue')
        sys.exit(result['exit_code'])
      if result.get('stop_asked'):   # a signal during the cell's final evaluation: the cell is done, stop here
        log(f'study stopped after cell {cell_name(init, fraction, seed)} (finished); rerun the same command to '
            'continue')
        sys.exit(loop.PREEMPTED_EXIT_CODE)
    metrics = json.loads(files.read_text(final))
    rows.append({'init': init, 'fraction': float(fraction), 'seed': int(seed), 'step': metrics['step'],
                 **{k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != 'step'}})
    if len(rows) == 1:   # the metrics' names are known once a cell is done: a typo stops here, not after every cell
      check_metric(str(config.study.metric), rows[0], cell_name(init, fraction, seed))
  if jax.process_index() == 0:
    write_results(rows, workdir, config.study.metric, skipped=skipped, subsets_mode=mode,
                  reference=reference_init(config.study.inits), split=str(config.data.eval_split))
  return rows


def summarize(rows, metric: str) -> list[dict[str, Any]]:
  import numpy as np  # pylint: disable=import-outside-toplevel
  out = []
  for init in dict.fromkeys(r['init'] for r in rows):
    for fraction in sorted({r['fraction'] for r in rows if r['init'] == init}):
      vals = [r[metric] for r in rows if r['init'] == init and r['fraction'] == fraction]
      out.append({'init': init, 'fraction': fraction, 'n': len(vals), 'mean': float(np.mean(vals)),
                  'std': float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0})
  return out


def reference_init(inits) -> str | None:
  """The init the others are compared with: one of no backbone ('', trained from scratch), the one named
  'scratch' where there are several (ml_collections lists keys sorted); None where every init has one."""
  scratch = [init for init, spec in inits.items() if not spec]
  return 'scratch' if 'scratch' in scratch else (scratch or [None])[0]


def paired(rows, metric: str, reference: str) -> list[dict[str, Any]]:
  """Each init's cells less ``reference``'s (scratch) on the same (fraction, seed): the subset is the same for
  every init, so its own difficulty cancels. Per init and fraction: the difference of every seed both have, their
  mean and std (``n`` seeds); the fractions where they share no seed are left out."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  base = {(r['fraction'], r['seed']): r[metric] for r in rows if r['init'] == reference}
  out = []
  for init in dict.fromkeys(r['init'] for r in rows if r['init'] != reference):
    for fraction in sorted({r['fraction'] for r in rows if r['init'] == init}):
      diffs = {r['seed']: r[metric] - base[fraction, r['seed']] for r in rows
               if r['init'] == init and r['fraction'] == fraction and (fraction, r['seed']) in base}
      if diffs:
        vals = list(diffs.values())
        out.append({'init': init, 'fraction': fraction, 'n': len(vals), 'mean': float(np.mean(vals)),
                    'std': float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                    'per_seed': {str(seed): diffs[seed] for seed in sorted(diffs)}})
  return out


def _as_percent(metric: str) -> bool:
  """Whether the metric is a fraction by its name (top-1, accuracy, F1): shown in % and its differences in points;
  another (a loss, a PSNR) as logged."""
  return re.search(r'(^|_)(top\d+|acc|accuracy|f1|precision|recall)(_|$)', metric.rsplit('/', 1)[-1]) is not None


def _markdown(summary, pairs, metric: str, reference: str | None, subsets_mode: str, split: str) -> str:
  """results.md: a row per init, a column per fraction, mean +- std over the seeds and, in round brackets, the
  mean paired difference from the reference's cells."""
  k, d = (100, 1) if _as_percent(metric) else (1, 3)   # scale and decimals
  fractions = sorted({s['fraction'] for s in summary})
  by = {(s['init'], s['fraction']): s for s in summary}
  vs = {(p['init'], p['fraction']): p for p in pairs}
  lines = ['| init | ' + ' | '.join(f'{100 * f:g}%' for f in fractions) + ' |', '|' + ' --- |' * (len(fractions) + 1)]
  for init in dict.fromkeys(s['init'] for s in summary):
    cells = []
    for f in fractions:
      s = by.get((init, f))
      p = vs.get((init, f))
      cells.append('-' if s is None else f"{k * s['mean']:.{d}f} +- {k * s['std']:.{d}f}"
                   + (f" ({k * p['mean']:+.{d}f})" if p else '')
                   + (f" [n={s['n']}]" if s['n'] < max(x['n'] for x in summary) else ''))
    lines.append(f'| {init} | ' + ' | '.join(cells) + ' |')
  what = 'folds' if subsets_mode == 'kfold' else 'subsets'
  unit = ('%', 'points') if k == 100 else ('as logged', 'its units')
  lines += ['', f'{metric} ({unit[0]}, {split} split): mean +- std over the {what} (seeds), the same images for every '
            'init' + (f'; in round brackets the mean difference from {reference} on the same {what}, in {unit[1]} '
                      f'(results.json: each seed\'s)' if reference else '') + '; [n=k]: a fraction with fewer cells.',
            '']
  return '\n'.join(lines)


def write_results(rows, workdir: str, metric: str, *, skipped=(), subsets_mode: str = 'random',
                  reference: str | None = None, split: str = 'test') -> None:
  """results.csv (one row per cell), results.json (mean and std per init and fraction, each init's paired
  differences from ``reference``'s cells (the scratch init) where there is one, the cells skipped), results.md
  (the table; ``split``: the split the cells were scored on) and their plot (with a panel of the differences). A
  cell without ``metric``: results.csv written, then StudyError listing what the cells have."""
  from jaxssl.runlog import write_json, write_text, writing  # pylint: disable=import-outside-toplevel
  keys = list(dict.fromkeys(k for r in rows for k in r))
  table = io.StringIO(newline='')
  w = csv.DictWriter(table, fieldnames=keys)
  w.writeheader()
  w.writerows(rows)
  write_text(files.join(workdir, 'results.csv'), table.getvalue())
  for r in rows:
    check_metric(metric, r, cell_name(r['init'], r['fraction'], r['seed']))
  summary = summarize(rows, metric)
  pairs = paired(rows, metric, reference) if reference in {r['init'] for r in rows} else []
  write_json(files.join(workdir, 'results.json'), {
      'metric': metric, 'subsets': subsets_mode, 'cells': summary,
      'paired': {'reference': reference, 'cells': pairs} if pairs else None, 'skipped': list(skipped)})
  write_text(files.join(workdir, 'results.md'), _markdown(summary, pairs, metric, reference if pairs else None,
                                                          subsets_mode, split))
  from jaxssl.eval import plots  # pylint: disable=import-outside-toplevel  # Agg backend
  plt = plots.plt
  fig, axes = plt.subplots(1, 2 if pairs else 1, figsize=(11 if pairs else 5.5, 3.8), squeeze=False)
  # Ticks at the studied fractions, written plainly ('1', '5', '100'), not as powers of ten.
  ticks = sorted({100 * s['fraction'] for s in summary})
  panels = [(axes[0][0], summary, metric, None)]
  if pairs:
    panels.append((axes[0][1], pairs, f'{metric}, less {reference} on the same subsets'
                   + (' (points)' if _as_percent(metric) else ''), reference))
  for ax, points, ylabel, less in panels:
    for k, init in enumerate(dict.fromkeys(s['init'] for s in summary)):
      pts = [s for s in points if s['init'] == init]
      if pts:
        scale = 100 if less and _as_percent(metric) else 1
        ax.errorbar([100 * s['fraction'] for s in pts], [scale * s['mean'] for s in pts],
                    yerr=[scale * s['std'] for s in pts], marker='o', ms=3, capsize=3, label=init, color=f'C{k}')
    if less:
      ax.axhline(0.0, color='black', ls='--', lw=1, label=less)
    ax.set_xscale('log')
    ax.set_xticks(ticks, [f'{t:g}' for t in ticks])
    ax.xaxis.set_minor_locator(plots.matplotlib.ticker.NullLocator())
    ax.set_xlabel('labelled training images (%, log scale)')
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7)
  fig.tight_layout()
  with writing(workdir, workdir):
    files.save_figure(fig, files.join(workdir, 'label_efficiency.png'), dpi=110)
  plt.close(fig)


def _main(config, workdir: str) -> None:
  from jaxssl.runlog import writing  # pylint: disable=import-outside-toplevel
  try:
    check_study(config)
  except ValueError as e:   # as the config check's: nothing built or written yet
    cli.fail(f'bad config: {e}')
  with writing(workdir, workdir):
    files.makedirs(workdir)
  run_study(config, workdir)


def run():
  cli.run_config_command('Study', 'configs/fmnist_label_efficiency.py',
                         'Study directory: cells/, results.csv, results.json, results.md, the plot.', _main, StudyError)


if __name__ == '__main__':
  run()
