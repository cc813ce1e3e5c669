"""The pure train step: a function of pytrees, jitted once over the mesh."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import optax
from flax import nnx

from jaxssl.tasks import Task, task_losses
from jaxssl.tasks.base import metric_mean
from jaxssl.train.state import TrainState, merge_model


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    tasks: Sequence[Task], weights: Mapping[str, float]) -> Callable:
  """(state, batch, rng) -> (state, metrics). ``rng`` is the run's key; each step folds its number in."""

  def train_step(state: TrainState, batch, rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params, model_state):
      model = merge_model(graphdef, params, model_state)
      loss, metrics = task_losses(model, tasks, weights, batch, train=True, rng=step_rng)
      return loss, (metrics, nnx.state(model, nnx.Not(nnx.Param)))

    (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.model_state)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {k: metric_mean(pair) for k, pair in metrics.items()}
    metrics = {**metrics, 'loss': loss, 'lr': schedule(state.step), 'grad_norm': optax.tree.norm(grads)}
    return TrainState(step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state), metrics

  return train_step


def jit_train_step(train_step, state_sharding, batch_sharding, replicated):
  """jit once with explicit shardings; the old train state is donated (its buffers are reused)."""
  return jax.jit(train_step, in_shardings=(state_sharding, batch_sharding, replicated),
                 out_shardings=(state_sharding, replicated), donate_argnums=(0,))
