"""Every task's loss and metrics over a whole split: the numbers of metrics.jsonl's eval rows and of
final_metrics.json.

Each batch adds its (total, count) pairs (jaxssl/tasks/base.py), padding rows weighted 0, so every metric is an
exact mean over the split, whatever the batch size or the number of devices and processes. ``loss`` is the
weighted sum of the tasks' losses, a mean over the first task's examples.
"""

from __future__ import annotations

import dataclasses

from jaxssl.eval import confusion
from jaxssl.eval.base import Evaluator
from jaxssl.tasks import task_losses


COUNTS = '_confusion_counts'   # the key of the counts in a pass's sums (not a metric)


@dataclasses.dataclass
class SplitMetrics(Evaluator):
  """Loss and metrics of every task on the eval split."""
  at: tuple[str, ...] = ('eval', 'final', 'checkpoint')
  logged = True
  order = -1

  def __post_init__(self):
    ctx = self.ctx
    first = ctx.tasks[0].name
    counted = confusion.counted_tasks(ctx)

    def sums(model, batch, counts=False):
      loss, metrics = task_losses(model, ctx.tasks, ctx.weights, batch, train=False, rng=None)
      n = batch[first]['weight'].sum()
      extra = {COUNTS: confusion.class_counts(model, batch, counted)} if counts else {}
      return {'loss': (loss * n, n), **metrics, **extra}

    self._sums = ctx.compile(sums)
    # At the phases the confusion evaluator runs, the same pass also counts its matrices (one read of the split
    # and, as XLA shares the forward pass between the loss and the counts, one forward pass).
    self._sums_and_counts = ctx.compile(lambda model, batch: sums(model, batch, True)) if counted else None

  def run(self, state, phase: str) -> dict[str, float]:
    counting = self._sums_and_counts is not None and self.ctx.wanted(confusion.SHARED, phase)
    sums = self.ctx.accumulate(self._sums_and_counts if counting else self._sums, state, self.ctx.batches())
    if counting:
      self.ctx.keep(confusion.SHARED, state, sums.pop(COUNTS))
    keys = ['loss'] + [k for t in self.ctx.tasks for k in sums if k.startswith(f'{t.name}/')]  # task by task
    return {k: float(sums[k][0]) / max(float(sums[k][1]), 1e-8) for k in keys}
