"""Checks a config's names and values before any data is prepared, any model compiled, or any file written."""

from __future__ import annotations

import inspect

import ml_collections

MODES = ('train', 'eval', 'knn', 'predict')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError with the problem and the fix; cheap (imports no model code's heavy parts)."""
  from jaxssl.data.datasets import DATASETS, check_splits  # pylint: disable=import-outside-toplevel
  from jaxssl.models import BACKBONES  # pylint: disable=import-outside-toplevel
  from jaxssl.tasks import check_tasks  # pylint: disable=import-outside-toplevel
  from jaxssl.train.optim import OPTIMIZERS, SCHEDULES  # pylint: disable=import-outside-toplevel

  def choose(what, value, choices, flag):
    if value not in choices:
      raise ValueError(f"unknown {what} '{value}'; choose one of: {', '.join(choices)} (set {flag})")

  choose('mode', config.mode, MODES, '--mode or --config.mode')
  if not config.data.name.startswith('tfds:'):  # tfds:NAME: any prepared tfds dataset, checked by check_splits
    choose('dataset', config.data.name, sorted(DATASETS) + ['tfds:NAME[/CONFIG][:VERSION]'], '--config.data.name')
  check_splits(config.data)
  from jaxssl.data.normalization import check_normalize  # pylint: disable=import-outside-toplevel
  check_normalize(config.data)
  choose('model', config.model.name, list(BACKBONES), '--config.model.name')
  _check_model_options(BACKBONES[config.model.name], config.model)
  from jaxssl.models.torchvision_weights import check_weights_config  # pylint: disable=import-outside-toplevel
  if config.mode not in ('eval', 'predict'):   # those restore the run's own checkpoint, never init_from
    check_weights_config(config.init_from, config.init_step, config.model.name, dict(config.model.options))
  from jaxssl.ops import IMPLS  # pylint: disable=import-outside-toplevel
  choose('conv impl', config.model.conv_impl, IMPLS, '--config.model.conv_impl')
  if config.model.conv_impl == 'onednn':  # asked for by name: where it cannot be built, say so now (builds ~5 s)
    from jaxssl.ops import cpu_path  # pylint: disable=import-outside-toplevel
    cpu_path('onednn')
  choose('optimizer', config.optim.name, OPTIMIZERS, '--config.optim.name')
  choose('schedule', config.optim.schedule, SCHEDULES, '--config.optim.schedule')
  check_tasks(config.tasks, config.get('online_probe'), config.batch_size)
  for key in ('batch_size', 'eval_batch_size', 'log_every', 'checkpoint_every', 'keep_checkpoints'):
    if config[key] <= 0:
      raise ValueError(f'--config.{key}={config[key]} must be positive')
  from jaxssl.tasks.base import POOLS  # pylint: disable=import-outside-toplevel
  from jaxssl.train.optim import parse_trainable  # pylint: disable=import-outside-toplevel
  parse_trainable(config.optim.trainable)
  if config.optim.skip_nonfinite_steps < 0:
    raise ValueError('--config.optim.skip_nonfinite_steps must be >= 0 (0 stops the run at the first non-finite '
                     'step)')
  if config.lock_timeout_s <= 0:
    raise ValueError('--config.lock_timeout_s must be positive (seconds without a heartbeat after which another '
                     "host's lock on the workdir counts as stale)")
  if config.optim.backbone_lr_scale < 0:
    raise ValueError('--config.optim.backbone_lr_scale must be >= 0 (0 freezes the backbone)')
  choose('knn pool', config.knn.pool, POOLS, '--config.knn.pool')
  if config.knn.k <= 0 or config.knn.temperature <= 0:
    raise ValueError('--config.knn.k and --config.knn.temperature must be positive')
  from jaxssl.eval.attributes import check_options  # pylint: disable=import-outside-toplevel
  check_options(config)
  from jaxssl.eval.base import check_evals  # pylint: disable=import-outside-toplevel
  check_evals(config)
  _check_counts(config)


def _check_counts(config: ml_collections.ConfigDict) -> None:
  """Steps, intervals and sizes: a negative one used to run (total_steps=-5 trained 0 steps and exited 0,
  eval_every=-1 evaluated after every step), so each is refused here with the values it may take."""
  for key, meaning in (('total_steps', '0 = from num_epochs'), ('num_epochs', 'used where total_steps is 0'),
                       ('eval_every', '0 = only at the end')):
    if config[key] < 0:
      raise ValueError(f'--config.{key}={config[key]} must be >= 0 ({meaning})')
  if config.total_steps <= 0 and config.num_epochs <= 0:
    raise ValueError('set --config.num_epochs or --config.total_steps to a positive value')
  from jaxssl.train.transfer import MISMATCHED  # pylint: disable=import-outside-toplevel
  if config.get('init_mismatched', 'error') not in MISMATCHED:
    raise ValueError(f"--config.init_mismatched='{config.init_mismatched}' must be 'error' (a backbone array of "
                     "another shape in init_from stops the run) or 'skip' (it keeps this model's init)")
  for key in ('eval_step', 'init_step'):
    if config[key] < -1:
      raise ValueError(f'--config.{key}={config[key]} must be a step >= 0, or -1 for the latest checkpoint')
  data = config.data
  for key, meaning in (('train_limit', '0 = every record'), ('eval_limit', '0 = every record')):
    if data[key] < 0:
      raise ValueError(f'--config.data.{key}={data[key]} must be >= 0 ({meaning})')
  for key, least, meaning in (('num_workers', 0, '0 = read in the training process'),
                              ('read_threads', 0, 'threads per process'), ('prefetch_batches', 0, 'batches ahead')):
    if data.get(key, -1) != -1 and data[key] < least:
      raise ValueError(f'--config.data.{key}={data[key]} must be >= {least} ({meaning}), or -1 for auto (chosen '
                       'from the cores and the backend)')
  if not 0 < data.train_fraction <= 1:
    raise ValueError(f'--config.data.train_fraction={data.train_fraction} must be in (0, 1] (1 = every record)')
  from jaxssl.data.splits import HOLDOUT_SPLIT  # pylint: disable=import-outside-toplevel
  from jaxssl.data.subsets import MODES as SUBSET_MODES  # pylint: disable=import-outside-toplevel
  holdout = float(data.get('holdout_fraction', 0.0))
  if not 0 <= holdout < 1:
    raise ValueError(f'--config.data.holdout_fraction={holdout} must be in [0, 1) (0 = no validation images held '
                     'out of training)')
  if data.eval_split == HOLDOUT_SPLIT and holdout == 0:
    raise ValueError(f"--config.data.eval_split='{HOLDOUT_SPLIT}' evaluates on the training images held out by "
                     'data.holdout_fraction, which is 0: set it too (e.g. --config.data.holdout_fraction=0.1)')
  if data.get('subset_mode', 'random') not in SUBSET_MODES:
    raise ValueError(f"--config.data.subset_mode='{data.subset_mode}' must be 'random' (a random subset per "
                     "subset_seed) or 'kfold' (disjoint stratified folds, subset_seed = the fold)")


def _check_model_options(constructor, model_cfg: ml_collections.ConfigDict) -> None:
  """``model.options`` are the backbone constructor's keyword arguments: one it does not take (``dropout`` kept
  from a CifarNet config when switching to a ResNet) is one line, not a TypeError from deep in the build."""
  params = inspect.signature(constructor).parameters
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
    return
  takes = sorted(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
                 and n not in ('input_shape', 'rngs'))
  unknown = sorted(set(model_cfg.options) - set(takes))
  if unknown:
    raise ValueError(f"model '{model_cfg.name}' does not take the option(s) {unknown} in config.model.options; "
                     f'its options are: {takes}. Use a config written for it (configs/fmnist_resnet.py for the '
                     'ResNets) or a config file whose model.options it takes')
