"""The benchmark's pictures (jaxssl/benchmark.py): each a function of what is on disk, drawn into the benchmark
directory. probe_layers.png (RotNet's per-layer figure), label_efficiency.png (every init with error bars),
gain_over_scratch.png (each init's difference from scratch, subset by subset, against the targets),
pretext_curves.png (each pretext run on its own task), filters.png and reconstructions.png (one panel per init)."""

from __future__ import annotations

import os
from typing import Any

from jaxssl import benchmark_tables as tables

PRETEXT_METRICS = tables.PRETEXT_METRICS   # the metric pretext_curves.png draws per run


def styles(inits: list[str], labelled=()) -> dict[str, dict[str, Any]]:
  """One look per init, none shared (matplotlib's default cycle repeats after 10: with 13 inits autoencoder and
  supervised were one blue): the self-supervised inits a colour of tab20 and a marker each, the references
  apart: the random init (scratch / untrained) black and dashed, a labelled init (supervised) grey dash-dot."""
  from jaxssl.eval import plots  # pylint: disable=import-outside-toplevel
  colors = plots.plt.get_cmap('tab20').colors   # pairs (dark, light); not its greys (14, 15); the dark ones first
  palette = [colors[i] for i in list(range(0, 20, 2)) + list(range(1, 20, 2)) if i not in (14, 15)]
  markers = 'osD^vP*X<>hp'
  out, k = {}, 0
  for init in inits:
    if init == 'random':
      out[init] = {'color': 'black', 'ls': '--', 'marker': 'x'}
    elif init in labelled:
      out[init] = {'color': 'dimgray', 'ls': '-.', 'marker': '+'}
    else:
      out[init] = {'color': palette[k % len(palette)], 'ls': '-', 'marker': markers[k % len(markers)]}
      k += 1
  return out


def probe_layers(r: dict[str, Any], path: str) -> None:
  """Per-layer linear probe test top-1 of every probed init (nothing drawn while none is)."""
  from jaxssl.eval import plots  # pylint: disable=import-outside-toplevel  # Agg backend
  plt = plots.plt
  probed = [row for row in r['inits'] if row['probe_layers']]
  if not probed:
    return
  look = styles([row['init'] for row in r['inits']], r['protocol'].get('labelled', ()))
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for row in probed:
    layers = list(row['probe_layers'])
    ax.plot(range(len(layers)), [100 * row['probe_layers'][l] for l in layers], ms=4, lw=1.2,
            label='random (untrained)' if row['init'] == 'random' else row['init'], **look[row['init']])
    ax.set_xticks(range(len(layers)), layers)
  ax.set_xlabel('backbone layer (pooled as in jaxssl/eval/cached_probe.py)')
  ax.set_ylabel('linear probe test top-1 (%)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def label_efficiency(r: dict[str, Any], path: str) -> dict[str, dict[str, list[str]]]:
  """Every init's curve over the labelled fractions with error bars (std over subsets): fine-tuned (a fraction
  once all its cells are done), and the frozen-feature (lowshot) probe beside it where measured. Returns the
  fractions drawn, per panel ('finetune', 'lowshot') and init."""
  from jaxssl.eval import plots  # pylint: disable=import-outside-toplevel
  plt = plots.plt
  panels = [(key, title) for key, title in
            (('finetune', f"fine-tuned: {r['metric']} (%)"),
             ('lowshot', 'frozen features: linear probe, its layer chosen on val (%)'))
            if any(row.get(key) for row in r['inits'])]
  drawn: dict[str, dict[str, list[str]]] = {}
  if not panels:
    return drawn
  look = styles([row['init'] for row in r['inits']], r['protocol'].get('labelled', ()))
  expected = tables.expected_cells(r)
  fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.4), squeeze=False)
  for ax, (key, title) in zip(axes[0], panels):
    under_way = False
    for k, row in enumerate(r['inits']):
      fs = sorted(row.get(key) or {}, key=float)
      if key == 'finetune':   # a fraction whose cells are not all done would draw a mean of other subsets
        under_way |= any(not tables.fraction_complete(row, f, expected) for f in fs)
        fs = [f for f in fs if tables.fraction_complete(row, f, expected) and row[key][f].get('n')]
      if not fs:
        continue
      drawn.setdefault(key, {})[row['init']] = fs
      shift = 10 ** (0.012 * (k - (len(r['inits']) - 1) / 2))   # side by side on the log axis: error bars apart
      ax.errorbar([100 * float(f) * shift for f in fs], [100 * row[key][f]['mean'] for f in fs],
                  yerr=[100 * row[key][f]['std'] for f in fs], ms=4, lw=1.2, capsize=2, **look[row['init']],
                  label=('random (scratch)' if key == 'finetune' else 'random (untrained)') if row['init'] == 'random'
                  else row['init'])
    ax.set_xscale('log')
    ticks = [100 * f for f in r['fractions']]
    ax.set_xticks(ticks, [f'{t:g}' for t in ticks])
    ax.xaxis.set_minor_locator(plots.matplotlib.ticker.NullLocator())
    ax.set_xlabel('labelled training images (%, log scale)')
    ax.set_ylabel(title, fontsize=8)
    if under_way:
      ax.set_title('cells under way: their fractions are drawn once all are done', fontsize=8)
    ax.grid(alpha=0.3, which='both')
    if ax.get_legend_handles_labels()[0]:   # nothing drawn (every cell diverged, or none done): no legend
      ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return drawn


def gain_over_scratch(r: dict[str, Any], path: str) -> dict[str, list[str]]:
  """The benchmark's question as one picture: a panel per labelled fraction, a row per init, its fine-tuning less
  scratch's on each same subset (small dots) and their mean over the subsets both scored (the init's marker), a
  line at 0 (scratch) and the targets' lines (``benchmark.targets``: over_scratch, below_scratch). Returns the
  fractions drawn per init (nothing drawn while no init has a difference)."""
  from jaxssl.eval import plots  # pylint: disable=import-outside-toplevel
  plt = plots.plt
  fractions, diffs = tables.paired_differences(r)
  drawn = {init: [f for f in fractions if any(d is not None for d in by_fraction[f])]
           for init, by_fraction in diffs.items()}
  drawn = {init: fs for init, fs in drawn.items() if fs}
  fractions = [f for f in fractions if any(f in fs for fs in drawn.values())]
  if not fractions:
    return {}
  inits = list(drawn)
  look = styles([row['init'] for row in r['inits']], r['protocol'].get('labelled', ()))
  targets = r['protocol'].get('targets') or {}
  lines: dict[str, list[tuple[float, str]]] = {}   # fraction -> its targets' (points, label)
  for key, sign, word in (('over_scratch', 1, 'target +'), ('below_scratch', -1, 'floor -')):
    for f, p in targets.get(key, ()):
      lines.setdefault(f'{float(f):g}', []).append((sign * 100 * float(p), f'{word}{100 * float(p):g}'))
  fig, axes = plt.subplots(1, len(fractions), figsize=(2.9 * len(fractions) + 1.4, max(2.6, 0.32 * len(inits) + 1.5)),
                           sharey=True, squeeze=False)
  for ax, f in zip(axes[0], fractions):
    for y, init in enumerate(inits):
      got = [100 * d for d in diffs[init][f] if d is not None]
      if not got:
        continue
      style = look[init]
      ax.plot(got, [y] * len(got), 'o', ms=3, color=style['color'], alpha=0.45, mfc='none')
      ax.plot([sum(got) / len(got)], [y], style['marker'], ms=7, color=style['color'])
    ax.axvline(0.0, color='black', ls='--', lw=1)
    for at, label in lines.get(f, ()):
      ax.axvline(at, color='tab:red', ls=':', lw=1.5)
      ax.text(at, -0.75, label, color='tab:red', fontsize=7, ha='center', va='top',
              bbox={'facecolor': 'white', 'edgecolor': 'none', 'pad': 1})
    ax.set_title(f'{100 * float(f):g}% of the labels', fontsize=9)
    ax.set_xlabel('points over scratch (same subset)', fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, axis='x')
  axes[0][0].set_yticks(range(len(inits)), inits)
  axes[0][0].set_ylim(len(inits) - 0.4, -1.0)   # the first init on top, room above for the targets' labels
  fig.suptitle(f"fine-tuned {r['metric']}, less scratch's on the same subset: each subset (dots) and the mean",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return drawn


def pretext_curves(runs: list[tuple[str, str, list[str]]], path: str) -> list[tuple[str, str]]:
  """Each pretext run's own task over its epochs (train rows as a line, its evaluations as dots), one panel per
  ``(init, run directory, its tasks)``: how soon a task is solved is part of why it transfers or not. The metric
  drawn is the first of :data:`PRETEXT_METRICS` the run logs for its tasks (else its loss). Returns (init,
  metric) of each panel."""
  from jaxssl.eval import plots  # pylint: disable=import-outside-toplevel
  from jaxssl.runlog import read_metrics  # pylint: disable=import-outside-toplevel
  plt = plots.plt
  drawn = []
  for init, run, tasks in runs:
    if not os.path.exists(os.path.join(run, 'metrics.jsonl')):
      continue
    rows = [row for row in read_metrics(run) if row.get('split') != 'holdout']
    keys = sorted({k for row in rows for k in row if k.startswith(tuple(f'{t}/' for t in tasks))})
    metric = next((k for suffix in PRETEXT_METRICS for k in keys if k.endswith(suffix)), 'loss')
    per_epoch = next((row['epoch'] / row['step'] for row in rows if row.get('epoch') and row.get('step')), None)
    if per_epoch is not None:
      drawn.append((init, metric, rows, per_epoch))
  if drawn:
    cols = min(4, len(drawn))
    nrows = -(-len(drawn) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.5 * nrows + 0.4), squeeze=False)
    for ax in axes.flat[len(drawn):]:
      ax.axis('off')
    for ax, (init, metric, rows, per_epoch) in zip(axes.flat, drawn):
      for split, style in (('train', '-'), (None, 'o')):
        pts = sorted((row['step'] * per_epoch, row[metric]) for row in rows if metric in row and
                     (row['split'] == 'train') == (split == 'train'))
        if pts:
          ax.plot(*zip(*pts), style, ms=4, lw=1, label='train' if split else 'held-out eval')
      ax.set_title(f'{init}: {metric}', fontsize=8)
      ax.set_xlabel('epoch', fontsize=7)
      ax.tick_params(labelsize=7)
      ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle('each pretext run on its own task', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
  return [d[:2] for d in drawn]


def filters(backbones: dict[str, str], path: str) -> list[str]:
  """The first convolution of every trained backbone (init -> its run directory), one panel per init, each kernel
  scaled to its own range (as jaxssl/eval/filters.py draws one run's). Returns what each panel shows."""
  from jaxssl import report  # pylint: disable=import-outside-toplevel
  from jaxssl.eval import filters as filter_grids, plots  # pylint: disable=import-outside-toplevel
  from jaxssl.runlog import log  # pylint: disable=import-outside-toplevel
  plt = plots.plt
  panels, shown = [], []
  for init, run in backbones.items():
    try:
      what, kernel = report.checkpoint_filters(run)
    except Exception as e:  # pylint: disable=broad-exception-caught  # a picture never stops the benchmark
      log(f'note: filters.png has no panel for {init}: {" ".join(str(e).split())[:300]}')
      continue
    panels.append((init, what, filter_grids.filter_grid(kernel)))
    shown.append(f'{init}: {what}')
  if panels:
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.0, 2.6 * cols), 2.9 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
      ax.axis('off')
    for ax, (init, what, grid) in zip(axes.flat, panels):
      filter_grids.show_grid(ax, grid)
      ax.set_title(f"{init}\n{what.rsplit(' at step ', 1)[0]}", fontsize=7)
    fig.suptitle('first convolution of each backbone\n(each kernel scaled to its own range)', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
  return shown


def reconstructions(drawn: list[tuple[str, str]], workdir: str, path: str) -> None:
  """Each dense pretext run's last ``reconstructions.png`` ((init, its path)), stacked with the init's name."""
  from jaxssl.eval import plots  # pylint: disable=import-outside-toplevel
  plt = plots.plt
  if not drawn:
    return
  images = [(init, p, plt.imread(p)) for init, p in drawn]
  heights = [img.shape[0] / img.shape[1] for _, _, img in images]
  fig, axes = plt.subplots(len(images), 1, figsize=(7, sum(7 * h + 0.3 for h in heights)), squeeze=False,
                           gridspec_kw={'height_ratios': heights})
  for ax, (init, p, img) in zip(axes[:, 0], images):
    ax.imshow(img)
    ax.axis('off')
    ax.set_title(f'{init} ({os.path.relpath(p, workdir)})', fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
