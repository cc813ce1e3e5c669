"""optax optimizers and learning-rate schedules built from ``config.optim``."""

from __future__ import annotations

import jax
import ml_collections
import optax

from jaxssl import trees

OPTIMIZERS = ('sgd', 'adam', 'adamw', 'lars')
SCHEDULES = ('constant', 'cosine', 'step')


def make_schedule(cfg: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  """``cosine``: linear warmup then cosine to 0. ``step``: lr * gamma every ``step_size_epochs`` epochs
  (the StepLR schedule of the seed experiments). ``constant``: warmup then flat."""
  warmup = int(cfg.warmup_epochs * steps_per_epoch)
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


def parse_trainable(trainable: str) -> int | None:
  """'all' -> None (every layer), 'heads' -> 0 (no backbone layer), 'last:K' -> K."""
  if trainable == 'all':
    return None
  if trainable == 'heads':
    return 0
  if trainable.startswith('last:') and trainable[5:].isdigit() and int(trainable[5:]) > 0:
    return int(trainable[5:])
  raise ValueError(f"unknown optim.trainable '{trainable}'; choose 'all', 'heads' or 'last:K' (K >= 1 backbone "
                   'layers, counted from the output)')


def param_labels(params, trainable: str = 'all', backbone_lr_scale: float = 1.0,
                 backbone_layers=None):
  """Per-leaf label: 'head' (full lr), 'backbone' (lr x backbone_lr_scale) or 'frozen' (no update at all).

  Paths are ``backbone/...`` and ``heads/...``; ``backbone_layers`` (module paths below ``backbone``, one
  group per layer, in call order: transfer.backbone_layers) says which are the last K for 'last:K'.
  """
  last = parse_trainable(trainable)
  if last is None:
    train_prefixes = [()]
  elif last == 0:
    train_prefixes = []
  else:
    if backbone_layers is None:
      raise ValueError(f"optim.trainable='{trainable}' needs the backbone's layer order")
    if last > len(backbone_layers):
      raise ValueError(f"optim.trainable='{trainable}' but the backbone has only {len(backbone_layers)} "
                       'parameterized layers')
    train_prefixes = [tuple(p) for group in backbone_layers[-last:] for p in group]
  backbone_label = 'backbone' if backbone_lr_scale > 0 else 'frozen'

  def label(path, _):
    keys = tuple(trees.key_name(p) for p in path)
    if keys[0] != 'backbone':
      return 'head'
    inner = keys[1:]
    trains = any(inner[:len(prefix)] == prefix for prefix in train_prefixes)
    return backbone_label if trains else 'frozen'

  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int,
                   backbone_layers=None) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer of ``cfg``; with ``trainable`` other than 'all' or ``backbone_lr_scale`` != 1, one copy per
  label of :func:`param_labels` (frozen leaves: ``set_to_zero``, so no momentum and no weight decay)."""
  schedule = make_schedule(cfg, total_steps, steps_per_epoch)
  trainable, scale = cfg.trainable, float(cfg.backbone_lr_scale)
  parse_trainable(trainable)
  if scale < 0:
    raise ValueError(f'optim.backbone_lr_scale={scale} must be >= 0 (0 freezes the backbone)')
  tx = _base_optimizer(cfg, schedule)
  if trainable != 'all' or scale != 1.0:
    # Kept out of the 'all' case: the plain optimizer's state (and old checkpoints) stay as they were.
    tx = optax.multi_transform(
        {'head': tx, 'backbone': _base_optimizer(cfg, lambda step: scale * schedule(step)),
         'frozen': optax.set_to_zero()},
        lambda params: param_labels(params, trainable, scale, backbone_layers))
  if cfg.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx, schedule


def _base_optimizer(cfg: ml_collections.ConfigDict, schedule) -> optax.GradientTransformation:
  wd = cfg.weight_decay
  if cfg.name == 'sgd':
    # Coupled L2, added to the gradient before momentum: the classic SGD weight decay.
    tx = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask) if wd else optax.identity(),
                     optax.sgd(schedule, momentum=cfg.momentum or None,
                               nesterov=cfg.nesterov))
  elif cfg.name == 'adam':
    tx = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask) if wd else optax.identity(),
                     optax.adam(schedule, b1=cfg.b1, b2=cfg.b2))
  elif cfg.name == 'adamw':
    tx = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=wd, mask=decay_mask)
  elif cfg.name == 'lars':
    # LARS (You et al. 2017), the large-batch recipe of SimCLR and BYOL: each kernel's step is scaled by
    # trust_coefficient x |w| / |g + wd w|. Biases and BatchNorm take plain momentum SGD without weight decay,
    # as in both papers.
    tx = optax.lars(schedule, weight_decay=wd, weight_decay_mask=decay_mask,
                    trust_coefficient=cfg.trust_coefficient, trust_ratio_mask=decay_mask, momentum=cfg.momentum,
                    nesterov=cfg.nesterov)
  else:
    raise ValueError(f"unknown optimizer '{cfg.name}'; choose one of: {', '.join(OPTIMIZERS)}")
  return tx
