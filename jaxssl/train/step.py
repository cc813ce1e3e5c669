"""Pure train and eval steps: functions of pytrees, jitted once over the mesh."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import optax
from flax import nnx

from jaxssl.tasks.base import Task
from jaxssl.train.state import TrainState, merge_model


def _task_losses(model, tasks: Sequence[Task], weights: Mapping[str, float], batch, *, train: bool, rng):
  """Weighted sum of every task's loss on one shared backbone, and the per-task metrics."""
  total, metrics = 0.0, {}
  for i, task in enumerate(tasks):
    task_rng = None if rng is None else jax.random.fold_in(rng, i)
    outputs = task.forward(model.backbone, model.heads[task.name], batch[task.name], train=train, rng=task_rng)
    loss, task_metrics = task.loss(outputs, batch[task.name])
    total = total + weights[task.name] * loss
    metrics.update({f'{task.name}/{k}': v for k, v in task_metrics.items()})
  return total, metrics


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    tasks: Sequence[Task], weights: Mapping[str, float]) -> Callable:
  """(state, batch, rng) -> (state, metrics). ``rng`` is the run's key; each step folds its number in."""

  def train_step(state: TrainState, batch, rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params, model_state):
      model = merge_model(graphdef, params, model_state)
      loss, metrics = _task_losses(model, tasks, weights, batch, train=True, rng=step_rng)
      return loss, (metrics, nnx.state(model, nnx.Not(nnx.Param)))

    (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.model_state)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, 'loss': loss, 'lr': schedule(state.step), 'grad_norm': optax.tree.norm(grads)}
    return TrainState(step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state), metrics

  return train_step


def make_eval_step(graphdef: nnx.GraphDef, tasks: Sequence[Task], weights: Mapping[str, float]) -> Callable:
  """(state, batch) -> metric sums weighted by each task's real examples, to be summed over batches."""

  def eval_step(state: TrainState, batch):
    model = merge_model(graphdef, state.params, state.model_state)
    loss, metrics = _task_losses(model, tasks, weights, batch, train=False, rng=None)
    sums = {'loss': loss * batch[tasks[0].name]['weight'].sum(), 'count': batch[tasks[0].name]['weight'].sum()}
    for task in tasks:
      w = batch[task.name]['weight'].sum()
      sums[f'{task.name}/count'] = w
      sums.update({k: v * w for k, v in metrics.items() if k.startswith(f'{task.name}/')})
    return sums

  return eval_step


def finish_eval(sums: Mapping[str, float], tasks: Sequence[Task]) -> dict[str, float]:
  """Metric sums over a whole split -> means (each task's metrics over that task's example count)."""
  out = {'loss': float(sums['loss']) / max(float(sums['count']), 1e-8)}
  for task in tasks:
    n = max(float(sums[f'{task.name}/count']), 1e-8)
    out.update({k: float(v) / n for k, v in sums.items()
                if k.startswith(f'{task.name}/') and not k.endswith('/count')})
  return out


def jit_steps(train_step, eval_step, state_sharding, batch_sharding, replicated):
  """jit once with explicit shardings; the old train state is donated (its buffers are reused)."""
  train = jax.jit(train_step, in_shardings=(state_sharding, batch_sharding, replicated),
                  out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  evaluate = jax.jit(eval_step, in_shardings=(state_sharding, batch_sharding), out_shardings=replicated)
  return train, evaluate

