"""Per-class accuracy and confusion matrices of the classification tasks over a whole split.

The confusion matrix is a metric sum: each eval batch adds its weighted [true, predicted] counts on device
(padding rows weigh 0), so the result is exact and no predictions travel to the host.
"""

from __future__ import annotations

import csv
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.data import pipeline
from jaxssl.train import mesh as mesh_lib
from jaxssl.train.state import merge_model


def classifiers(tasks) -> list:
  """Tasks whose outputs are logits over the dataset's classes."""
  from jaxssl.tasks.classification import Classification  # pylint: disable=import-outside-toplevel
  return [t for t in tasks if isinstance(t, Classification)]


def confusion_counts(logits: jax.Array, labels: jax.Array, weight: jax.Array, num_classes: int) -> jax.Array:
  """[true, predicted] sums of ``weight``; rows are the true classes."""
  true = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * weight[:, None]
  pred = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes, dtype=jnp.float32)
  return true.T @ pred


def make_confusion_step(exp, tasks):
  def step(state, batch):
    model = merge_model(exp.graphdef, state.params, state.model_state)
    out = {}
    for task in tasks:
      b = batch[task.name]
      logits = task.forward(model.backbone, model.heads[task.name], b, train=False, rng=None)
      out[task.name] = confusion_counts(logits, b['label'], b['weight'], task.num_classes)
    return out

  replicated = mesh_lib.replicated(exp.mesh)
  return jax.jit(step, in_shardings=(replicated, mesh_lib.batch_sharding(exp.mesh)), out_shardings=replicated)


def confusion_matrices(exp, state, source=None) -> dict[str, np.ndarray]:
  tasks = classifiers(exp.tasks)
  if not tasks:
    return {}
  step, sums = make_confusion_step(exp, tasks), None
  for batch in pipeline.eval_batches(exp.eval_source if source is None else source, exp.tasks,
                                     global_batch=exp.config.eval_batch_size, seed=exp.config.seed):
    out = step(state, mesh_lib.shard_batch(batch, exp.mesh))
    sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
  return {k: np.asarray(v).round().astype(np.int64) for k, v in jax.device_get(sums).items()}


def per_class_accuracy(cm: np.ndarray, class_names) -> dict[str, float | None]:
  totals = cm.sum(axis=1)
  return {name: (float(cm[c, c] / totals[c]) if totals[c] else None) for c, name in enumerate(class_names)}


def write_confusion(cm: np.ndarray, class_names, path_stem: str) -> None:
  """``<stem>.csv`` (rows: true class, columns: predicted) and ``<stem>.png`` (row-normalized heat map)."""
  with open(path_stem + '.csv', 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(['true \\ predicted', *class_names])
    for name, row in zip(class_names, cm):
      w.writerow([name, *[int(x) for x in row]])
  from jaxssl.eval import plots  # pylint: disable=import-outside-toplevel  (sets the Agg backend)
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
  ax.set_title(f'{os.path.basename(path_stem)} (row-normalized)', fontsize=8)
  fig.tight_layout()
  fig.savefig(path_stem + '.png', dpi=110)
  plt.close(fig)


def classification_report(exp, state, workdir: str, stem: str = 'confusion') -> dict[str, Any]:
  """``{'<task>/per_class_top1': {class: accuracy}}`` over the eval split; writes the confusion matrices as
  ``<workdir>/<stem>.csv|png`` (``<stem>_<task>`` when there are several classification tasks)."""
  matrices = confusion_matrices(exp, state)
  out = {}
  for name, cm in matrices.items():
    out[f'{name}/per_class_top1'] = per_class_accuracy(cm, exp.info.class_names)
    if jax.process_index() == 0:
      write_confusion(cm, exp.info.class_names,
                      os.path.join(workdir, stem if len(matrices) == 1 else f'{stem}_{name}'))
  return out
