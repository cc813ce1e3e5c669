"""Every task's loss and metrics over a whole split: the numbers of metrics.jsonl's eval rows and of
final_metrics.json.

Each batch adds its (total, count) pairs (jaxssl/tasks/base.py), padding rows weighted 0, so every metric is an
exact mean over the split, whatever the batch size or the number of devices and processes. ``loss`` is the
weighted sum of the tasks' losses, a mean over the first task's examples.
"""

from __future__ import annotations

import dataclasses

from jaxssl.eval.base import Evaluator
from jaxssl.tasks import task_losses


@dataclasses.dataclass
class SplitMetrics(Evaluator):
  """Loss and metrics of every task on the eval split."""
  at: tuple[str, ...] = ('eval', 'final', 'checkpoint')
  logged = True
  order = -1

  def __post_init__(self):
    ctx = self.ctx
    first = ctx.tasks[0].name

    def sums(model, batch):
      loss, metrics = task_losses(model, ctx.tasks, ctx.weights, batch, train=False, rng=None)
      n = batch[first]['weight'].sum()
      return {'loss': (loss * n, n), **metrics}

    self._sums = ctx.compile(sums)

  def run(self, state, phase: str) -> dict[str, float]:
    sums = self.ctx.accumulate(self._sums, state, self.ctx.batches())
    keys = ['loss'] + [k for t in self.ctx.tasks for k in sums if k.startswith(f'{t.name}/')]  # task by task
    return {k: float(sums[k][0]) / max(float(sums[k][1]), 1e-8) for k in keys}
