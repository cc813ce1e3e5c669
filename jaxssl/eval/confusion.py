"""Per-class accuracy and confusion matrices of the classification tasks over a whole split.

The confusion matrix is a metric sum: each eval batch adds its weighted [true, predicted] counts on device
(padding rows weigh 0), so the result is exact and no predictions travel to the host.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import files
from jaxssl.eval import plots
from jaxssl.eval.base import Evaluator


def confusion_counts(logits: jax.Array, labels: jax.Array, weight: jax.Array, num_classes: int) -> jax.Array:
  """[true, predicted] sums of ``weight``; rows are the true classes."""
  true = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * weight[:, None]
  pred = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes, dtype=jnp.float32)
  return true.T @ pred


SHARED = 'confusion'   # the name under which the split metrics' pass keeps the counts (EvalContext.shared)


def class_counts(model, batch, tasks) -> dict:
  """{task: [true, predicted] counts} of ``tasks`` on one batch (inside a compiled function)."""
  out = {}
  for task in tasks:
    b = batch[task.name]
    logits = task.forward(model.backbone, model.heads[task.name], b, train=False, rng=None)
    out[task.name] = confusion_counts(logits, b['label'], b['weight'], task.num_classes)
  return out


def counted_tasks(ctx) -> list:
  """The tasks that predict the dataset's classes: those with a confusion matrix."""
  return [t for t in ctx.tasks if t.predicts_classes]


def make_counts_fn(ctx):
  """Compiled (state, batch) -> {task: [true, predicted] counts} of the tasks that predict the dataset's classes
  (None where no task does)."""
  tasks = counted_tasks(ctx)
  if not tasks:
    return None
  return ctx.compile(lambda model, batch: class_counts(model, batch, tasks))


def confusion_matrices(ctx, state, counts_fn=None, source=None) -> dict[str, np.ndarray]:
  """{task: [true, predicted] counts} of every task that predicts the dataset's classes, over ``source``."""
  counts_fn = counts_fn or make_counts_fn(ctx)
  if counts_fn is None:
    return {}
  sums = ctx.accumulate(counts_fn, state, ctx.batches(source))
  return {k: np.asarray(v).round().astype(np.int64) for k, v in sums.items()}


def per_class_accuracy(cm: np.ndarray, class_names) -> dict[str, float | None]:
  totals = cm.sum(axis=1)
  return {name: (float(cm[c, c] / totals[c]) if totals[c] else None) for c, name in enumerate(class_names)}


def write_confusion(cm: np.ndarray, class_names, path_stem: str) -> None:
  """``<stem>.csv`` (rows: true class, columns: predicted) and ``<stem>.png`` (row-normalized heat map)."""
  table = io.StringIO(newline='')
  w = csv.writer(table)
  w.writerow(['true \\ predicted', *class_names])
  for name, row in zip(class_names, cm):
    w.writerow([name, *[int(x) for x in row]])
  files.write_text(path_stem + '.csv', table.getvalue())
  plt = plots.plt
  rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
  n = len(class_names)
  fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n))
  ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
  for i in range(n):
    for j in range(n):
      if cm[i, j]:
        ax.text(j, i, f'{rates[i, j]:.2f}', ha='center', va='center', fontsize=6,
                color='white' if rates[i, j] > 0.5 else 'black')
  ax.set_xticks(range(n), class_names, rotation=45, ha='right', fontsize=7)
  ax.set_yticks(range(n), class_names, fontsize=7)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(f'{files.basename(path_stem)} (row-normalized)', fontsize=8)
  fig.tight_layout()
  files.save_figure(fig, path_stem + '.png', dpi=110)
  plt.close(fig)


@dataclasses.dataclass
class Confusion(Evaluator):
  """Per-class top-1 of the classification tasks over the eval split (``<task>/per_class_top1``); their confusion
  matrices as ``confusion.csv|png`` in the workdir (``confusion_<task>`` when there are several;
  ``confusion_<split>_step<N>`` outside training)."""

  def __post_init__(self):
    self._counts = make_counts_fn(self.ctx)  # compiled once, whatever the number of evaluations
    if self._counts is not None:
      self.ctx.want(SHARED, self.at)   # the split metrics' pass counts them too: the split is read once

  def run(self, state, phase: str) -> dict[str, Any]:
    matrices = {}
    if self._counts is not None:
      kept = self.ctx.shared(SHARED, state)
      matrices = ({k: np.asarray(v).round().astype(np.int64) for k, v in kept.items()} if kept is not None else
                  confusion_matrices(self.ctx, state, self._counts))
    names = self.ctx.info.class_names
    out = {}
    stem = self.stem('confusion', state, phase)
    for name, cm in matrices.items():
      out[f'{name}/per_class_top1'] = per_class_accuracy(cm, names)
      if jax.process_index() == 0:
        write_confusion(cm, names, stem if len(matrices) == 1 else f'{stem}_{name}')
    return out
