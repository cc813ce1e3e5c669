"""optax optimizers and learning-rate schedules built from ``config.optim``."""

from __future__ import annotations

import jax
import ml_collections
import optax

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'cosine', 'step')


def make_schedule(cfg: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  """``cosine``: linear warmup then cosine to 0. ``step``: lr * gamma every ``step_size_epochs`` epochs
  (the StepLR schedule of the seed experiments). ``constant``: warmup then flat."""
  warmup = int(cfg.get('warmup_epochs', 0.0) * steps_per_epoch)
  if cfg.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total_steps, warmup + 1), end_value=0.0)
  if cfg.schedule == 'step':
    decay = optax.exponential_decay(cfg.lr, max(1, int(cfg.step_size_epochs * steps_per_epoch)),
                                    cfg.gamma, staircase=True)
  elif cfg.schedule == 'constant':
    decay = optax.constant_schedule(cfg.lr)
  else:
    raise ValueError(f"unknown schedule '{cfg.schedule}'; choose one of: {', '.join(SCHEDULES)}")
  if not warmup:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])


def decay_mask(params):
  """Weight decay on kernels only: decaying biases and BatchNorm scales only hurts (Goyal et al. 2017)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int,
                   steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = make_schedule(cfg, total_steps, steps_per_epoch)
  wd = cfg.get('weight_decay', 0.0)
  if cfg.name == 'sgd':
    # Coupled L2, added to the gradient before momentum: the classic SGD weight decay.
    tx = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask) if wd else optax.identity(),
                     optax.sgd(schedule, momentum=cfg.get('momentum', 0.9) or None,
                               nesterov=cfg.get('nesterov', False)))
  elif cfg.name == 'adam':
    tx = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask) if wd else optax.identity(),
                     optax.adam(schedule, b1=cfg.get('b1', 0.9), b2=cfg.get('b2', 0.999)))
  elif cfg.name == 'adamw':
    tx = optax.adamw(schedule, b1=cfg.get('b1', 0.9), b2=cfg.get('b2', 0.999), weight_decay=wd, mask=decay_mask)
  else:
    raise ValueError(f"unknown optimizer '{cfg.name}'; choose one of: {', '.join(OPTIMIZERS)}")
  if cfg.get('grad_clip_norm', 0.0):
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx, schedule
