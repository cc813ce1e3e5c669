"""A 2-D picture of what a probe sees: PCA of frozen backbone features, scattered and coloured by class.

Written by ``--mode=knn`` (the features it votes with) and at the end of a linear-probe run (the probed layer),
as ``embedding.png`` and ``embedding.csv`` (the 2-D points with their labels). Features are L2-normalized, as the
k-NN probe uses them, and only the first ``limit`` eval images are drawn (2,000: enough to see the classes'
shape, few enough to see single points).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxssl import files
from jaxssl.data.sources import IndexedSubset
from jaxssl.eval import features, plots
from jaxssl.eval.base import Evaluator

EMBEDDING_LIMIT = 2000


def pca(x, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Projects the rows of ``x`` [n, d] on their ``k`` principal axes.

  Returns (points [n, k], explained variance ratio [k], axes [k, d]). Each axis is signed so that its largest
  entry (in absolute value) is positive: the same data always gives the same picture. The eigenproblem is
  solved on the smaller of the covariance [d, d] and the Gram matrix [n, n], so flattened conv maps (d in the
  tens of thousands) stay cheap.
  """
  x = np.asarray(x, np.float64)
  n, d = x.shape
  k = min(k, n, d)
  xc = x - x.mean(axis=0)
  total = float(np.sum(xc * xc))
  if d <= n:
    evals, evecs = np.linalg.eigh(xc.T @ xc)
    order = np.argsort(evals)[::-1][:k]
    axes = evecs[:, order].T
  else:  # x = U S V^T: eigenvectors of x x^T are U, and V = x^T U / S
    evals, u = np.linalg.eigh(xc @ xc.T)
    order = np.argsort(evals)[::-1][:k]
    axes = (xc.T @ u[:, order] / np.sqrt(np.maximum(evals[order], 1e-300))).T
  evals = np.maximum(evals[order], 0.0)
  signs = np.sign(axes[np.arange(k), np.argmax(np.abs(axes), axis=1)])
  axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
  ratio = evals / total if total > 0 else np.zeros(k)
  return xc @ axes.T, ratio, axes


def write_embedding(features, labels, class_names, path_stem: str, title: str = '') -> dict[str, Any]:
  """PCA of ``features`` to 2-D; writes ``<stem>.csv`` (pc1, pc2, label, class) and ``<stem>.png``."""
  points, ratio, _ = pca(features, 2)
  if points.shape[1] < 2:  # a 1-D feature: nothing to spread on the second axis
    points = np.concatenate([points, np.zeros((len(points), 2 - points.shape[1]))], axis=1)
    ratio = np.concatenate([ratio, np.zeros(2 - len(ratio))])
  labels = np.asarray(labels).astype(np.int64)
  names = list(class_names)
  table = io.StringIO(newline='')
  w = csv.writer(table)
  w.writerow(['pc1', 'pc2', 'label', 'class'])
  for (a, b), y in zip(points, labels):
    w.writerow([f'{a:.6g}', f'{b:.6g}', int(y), names[y] if 0 <= y < len(names) else y])
  files.write_text(path_stem + '.csv', table.getvalue())
  plt = plots.plt
  cmap = plt.get_cmap('tab10' if len(names) <= 10 else 'tab20' if len(names) <= 20 else 'turbo')
  fig, ax = plt.subplots(figsize=(7.5, 5.5))
  for c in np.unique(labels):
    sel = labels == c
    colour = cmap(int(c) % cmap.N) if len(names) <= 20 else cmap(int(c) / max(len(names) - 1, 1))
    ax.scatter(points[sel, 0], points[sel, 1], s=6, alpha=0.7, color=colour, linewidths=0,
               label=names[c] if 0 <= c < len(names) else str(c))
  ax.set_xlabel(f'PC1 ({100 * ratio[0]:.1f}% of variance)')
  ax.set_ylabel(f'PC2 ({100 * ratio[1]:.1f}% of variance)')
  ax.set_title(title or files.basename(path_stem), fontsize=9)
  ax.legend(fontsize=7, markerscale=2.5, loc='center left', bbox_to_anchor=(1.0, 0.5), frameon=False)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  files.save_figure(fig, path_stem + '.png', dpi=110)
  plt.close(fig)
  return {'points': points, 'explained_variance_ratio': ratio}


@dataclasses.dataclass
class ProbeEmbedding(Evaluator):
  """At the end of a linear-probe run: the embedding of the probed layer on the first ``limit`` eval images
  (the run's first task that runs its backbone frozen). Does nothing for a run without one."""
  at: tuple[str, ...] = ('final',)
  limit: int = EMBEDDING_LIMIT

  def run(self, state, phase: str) -> dict:
    ctx = self.ctx
    task = next((t for t in ctx.tasks if t.predicts_classes and t.freeze_backbone), None)
    if task is None:
      return {}
    feature = task.feature or nnx.merge(ctx.graphdef, state.params, state.model_state).backbone.output_name
    source = IndexedSubset(ctx.eval_source, range(min(self.limit, len(ctx.eval_source))))
    feats, labels = features.extract(ctx, state, source, features.make_feature_fn(ctx, feature, task.pool))
    embedding_for_run(feats, labels, ctx.info.class_names, ctx.workdir, f'{feature}/{task.pool}', ctx.eval_split,
                      self.limit)
    return {}


def embedding_for_run(feats, labels, class_names, workdir: str, layer: str, split: str,
                      limit: int = EMBEDDING_LIMIT) -> str | None:
  """``<workdir>/embedding.png|csv`` of the first ``limit`` rows (process 0 only)."""
  if jax.process_index():
    return None
  stem = files.join(workdir, 'embedding')
  n = min(limit, len(labels))
  write_embedding(feats[:n], labels[:n], class_names, stem,
                  f'{files.basename(files.abspath(workdir))}: PCA of {layer} features '
                  f'(L2-normalized), {n} {split} images')
  return stem + '.png'
