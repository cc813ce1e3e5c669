"""Pictures of a run: loss and accuracy curves (train and eval) from ``metrics.jsonl``."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position

from jaxssl import files  # pylint: disable=wrong-import-position
from jaxssl.eval.base import Evaluator  # pylint: disable=wrong-import-position
from jaxssl.runlog import read_metrics  # pylint: disable=wrong-import-position


def _series(rows, split, key):
  pts = sorted((r['step'], r[key]) for r in rows if r['split'] == split and key in r)
  return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(workdir: str, eval_split: str = 'test', out: str | None = None) -> str | None:
  """Writes ``curves.png``: one panel for losses, one per accuracy-like metric, train and eval overlaid."""
  rows = read_metrics(workdir)
  if not rows:
    return None
  keys = sorted({k for r in rows for k in r if k not in ('step', 'split')})
  accs = [k for k in keys if k.endswith(('top1', '/acc', 'accuracy', 'exact'))]
  losses = [k for k in keys if k == 'loss' or k.endswith('/loss')]
  if len(losses) == 2 and 'loss' in losses:  # one task: its loss is the total (times its weight); draw it once
    losses = ['loss']
  panels = [('loss', losses)] + [(k, [k]) for k in accs]
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
  for ax, (title, ks) in zip(axes[0], panels):
    for k in ks:
      for split, style in (('train', '-'), (eval_split, 'o-')):
        x, y = _series(rows, split, k)
        if x:
          ax.plot(x, y, style, ms=3, label=f'{split} {k}')
    ax.set_title(title)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(files.basename(files.abspath(workdir)))
  fig.tight_layout()
  out = out or files.join(workdir, 'curves.png')
  files.save_figure(fig, out, dpi=110)
  plt.close(fig)
  return out


@dataclasses.dataclass
class Curves(Evaluator):
  """``curves.png`` at the end of training, from every row of metrics.jsonl (the final evaluation's included)."""
  at: tuple[str, ...] = ('final',)
  order = 1

  def run(self, state, phase: str) -> dict:
    if jax.process_index() == 0:
      plot_curves(self.ctx.workdir, eval_split=self.ctx.eval_split)
    return {}
