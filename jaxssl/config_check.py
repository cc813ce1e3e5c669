"""Checks a config's names and values before any data is prepared, any model compiled, or any file written."""

from __future__ import annotations

import ml_collections

MODES = ('train', 'eval', 'knn', 'predict')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError with the problem and the fix; cheap (imports no model code's heavy parts)."""
  from jaxssl.data.datasets import DATASETS  # pylint: disable=import-outside-toplevel
  from jaxssl.models import BACKBONES  # pylint: disable=import-outside-toplevel
  from jaxssl.tasks import check_tasks  # pylint: disable=import-outside-toplevel
  from jaxssl.train.optim import OPTIMIZERS, SCHEDULES  # pylint: disable=import-outside-toplevel

  def choose(what, value, choices, flag):
    if value not in choices:
      raise ValueError(f"unknown {what} '{value}'; choose one of: {', '.join(choices)} (set {flag})")

  choose('mode', config.mode, MODES, '--mode or --config.mode')
  choose('dataset', config.data.name, sorted(DATASETS), '--config.data.name')
  choose('model', config.model.name, list(BACKBONES), '--config.model.name')
  from jaxssl.ops import IMPLS  # pylint: disable=import-outside-toplevel
  choose('conv impl', config.model.conv_impl, IMPLS, '--config.model.conv_impl')
  choose('optimizer', config.optim.name, OPTIMIZERS, '--config.optim.name')
  choose('schedule', config.optim.schedule, SCHEDULES, '--config.optim.schedule')
  check_tasks(config.tasks)
  for key in ('batch_size', 'eval_batch_size', 'log_every', 'checkpoint_every', 'keep_checkpoints'):
    if config[key] <= 0:
      raise ValueError(f'--config.{key}={config[key]} must be positive')
  from jaxssl.tasks.base import POOLS  # pylint: disable=import-outside-toplevel
  from jaxssl.train.optim import parse_trainable  # pylint: disable=import-outside-toplevel
  parse_trainable(config.optim.trainable)
  if config.optim.backbone_lr_scale < 0:
    raise ValueError('--config.optim.backbone_lr_scale must be >= 0 (0 freezes the backbone)')
  choose('knn pool', config.knn.pool, POOLS, '--config.knn.pool')
  if config.knn.k <= 0 or config.knn.temperature <= 0:
    raise ValueError('--config.knn.k and --config.knn.temperature must be positive')
  from jaxssl.eval.attributes import check_options  # pylint: disable=import-outside-toplevel
  check_options(config)
  from jaxssl.eval.base import check_evals  # pylint: disable=import-outside-toplevel
  check_evals(config)
  if config.total_steps <= 0 and config.num_epochs <= 0:
    raise ValueError('set --config.num_epochs or --config.total_steps to a positive value')
