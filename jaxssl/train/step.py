"""The pure train step: a function of pytrees, jitted once over the mesh.

A step whose loss, gradient norm or resulting state is not finite changes nothing: it returns the state it was
given (its step count advanced) and says so in its ``nonfinite`` metric, so a diverging run never carries NaN
into its parameters, its BatchNorm statistics or a checkpoint. The trainer reads that metric when it reads the
others (jaxssl/train/loop.py), without a device sync of its own."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxssl.tasks import Task, task_losses
from jaxssl.tasks.base import metric_mean
from jaxssl.train.state import TrainState, merge_model


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
            if hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def update_task_states(graphdef: nnx.GraphDef, tasks: Sequence[Task], params: nnx.State, model_state: nnx.State,
                       step: jax.Array, total_steps: int) -> nnx.State:
  """The ``model_state`` after every task's :meth:`Task.update_state` (a BYOL target's moving average) on
  ``params``; the parameters are only read."""
  model = merge_model(graphdef, params, model_state)
  for task in tasks:
    task.update_state(model.backbone, model.heads[task.name], step=step, total_steps=total_steps)
  return nnx.state(model, nnx.Not(nnx.Param))


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    tasks: Sequence[Task], weights: Mapping[str, float], total_steps: int = 0) -> Callable:
  """(state, batch, rng) -> (state, metrics). ``rng`` is the run's key; each step folds its number in.
  ``total_steps``: the run's length, for tasks whose state follows a schedule (BYOL's target momentum)."""
  # Only tasks with a state are called: the step of every other run stays exactly what it was.
  stateful = [t for t in tasks if type(t).update_state is not Task.update_state]

  def train_step(state: TrainState, batch, rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state.step)
    model_state = state.model_state
    if stateful:
      model_state = update_task_states(graphdef, stateful, state.params, model_state, state.step, total_steps)

    def loss_fn(params, model_state):
      model = merge_model(graphdef, params, model_state)
      loss, metrics = task_losses(model, tasks, weights, batch, train=True, rng=step_rng)
      return loss, (metrics, nnx.state(model, nnx.Not(nnx.Param)))

    (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, model_state)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = (params, model_state, opt_state)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(new)
    params, model_state, opt_state = jax.lax.cond(ok, lambda: new,
                                                  lambda: (state.params, state.model_state, state.opt_state))
    metrics = {k: metric_mean(pair) for k, pair in metrics.items()}
    metrics = {**metrics, 'loss': loss, 'lr': schedule(state.step), 'grad_norm': grad_norm,
               'nonfinite': (~ok).astype(jnp.float32)}
    return TrainState(step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state), metrics

  return train_step


def jit_train_step(train_step, state_sharding, batch_sharding, replicated):
  """jit once with explicit shardings; the old train state is donated (its buffers are reused)."""
  return jax.jit(train_step, in_shardings=(state_sharding, batch_sharding, replicated),
                 out_shardings=(state_sharding, replicated), donate_argnums=(0,))
