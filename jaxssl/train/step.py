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
