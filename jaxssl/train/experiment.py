"""Everything a run builds from its config before the first step, read top to bottom: data, tasks, model,
optimizer, mesh, jitted step. Shared by the trainer, the ``--mode`` runners, the study and the bench."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax
from flax import nnx

from jaxssl import ops, sharding
from jaxssl.data import datasets, normalization, sources, subsets
from jaxssl.eval.base import EvalContext
from jaxssl.runlog import log
from jaxssl.tasks import Task, build_tasks
from jaxssl.train import optim, step as step_lib, transfer
from jaxssl.train.state import TrainState, build_model, init_train_state


class DatasetMismatchError(ValueError):
  """A task or model that this dataset cannot serve (colorization of grey images, a probe without labels, an
  input size the backbone refuses): found when the real dataset is known, reported as one line."""


@dataclasses.dataclass
class Experiment:
  """What a config builds; ``eval_context(workdir)`` is what evaluators see of it."""
  config: ml_collections.ConfigDict
  info: datasets.DatasetInfo
  train_source: Any
  eval_source: Any
  tasks: list[Task]
  weights: dict[str, float]
  mesh: jax.sharding.Mesh
  graphdef: nnx.GraphDef
  state: TrainState
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  steps_per_epoch: int
  total_steps: int
  train_step: Callable
  init_info: dict[str, Any] | None = None   # where the backbone came from (config.init_from), if anywhere

  def eval_context(self, workdir: str) -> EvalContext:
    return EvalContext(self.config, self.info, self.tasks, self.weights, self.graphdef, self.mesh, workdir,
                       self.train_source, self.eval_source)


def build_experiment(config: ml_collections.ConfigDict, *, load_init: bool = True) -> Experiment:
  """``load_init``: copy ``config.init_from``'s backbone in (False where a checkpoint of the run itself will
  replace the state anyway: resume, eval)."""
  # Data.
  info = datasets.get_dataset(config.data.name, config.data)
  train_source, eval_source = subsets.load_sources(info, config.data)
  if config.data.train_fraction < 1.0:  # label-efficiency studies: the same images for every init
    try:
      train_source = sources.IndexedSubset(train_source, subsets.labelled_subset(
          subsets.source_labels(train_source), config.data.train_fraction, config.data.subset_seed,
          config.data.get('subset_mode', 'random')))
    except subsets.FoldError as e:
      raise DatasetMismatchError(str(e)) from e
  steps_per_epoch = max(1, len(train_source) // config.batch_size)
  total_steps = int(config.total_steps or round(config.num_epochs * steps_per_epoch))

  # Tasks, model, optimizer. How the layers compute (jaxssl/ops) is the run's setting, not the model's.
  ops.set_impl(config.model.conv_impl)
  try:
    info = normalization.normalized(info, config.data)  # data.normalize: the dataset's statistics or ImageNet's
    tasks, weights = build_tasks(config.tasks, info, config.get('online_probe'), train_source=train_source)
    model = build_model(config.model, info.input_shape, tasks, config.seed)
  except ValueError as e:  # what only the real dataset shows: colour needed, no classes, a size the model refuses
    message = ' '.join(str(e).split())
    if info.no_labels and 'label' in message:  # a task that needs labels, on data without: say which data and why
      message = f'{info.no_labels}: {message}'
    raise DatasetMismatchError(message) from e
  init_info = None
  if load_init and config.init_from:  # before the optimizer state exists: it starts from these
    init_info = transfer.load_init(model, config.init_from, config.init_step,   # a run, or a weights file
                                   config.get('init_mismatched', 'error'))
    log(f"backbone initialized from {init_info['checkpoint']} ({init_info['parameters']:,} values)")
    if init_info.get('not_transferred'):
      log(f"  not transferred (another shape there; kept at this model's init, init_mismatched=skip): "
          f"{', '.join(init_info['not_transferred'])}")
    if init_info.get('format') == 'torchvision' and config.data.get('normalize', 'dataset') != 'imagenet':
      log('note: torchvision weights expect inputs standardized with ImageNet\'s mean and std; this run uses the '
          "dataset's own (add --config.data.normalize=imagenet to give them what they were trained on)")
  transfer.check_frozen_tasks(config.optim, tasks)
  layers = None
  if config.optim.trainable.startswith('last:'):
    layers = transfer.backbone_layers(model.backbone, tasks[0].backbone_input_shape(tuple(info.input_shape)))
  tx, schedule = optim.make_optimizer(config.optim, total_steps, steps_per_epoch, backbone_layers=layers)
  graphdef, state = init_train_state(model, tx)

  # Mesh: batch split over every device, parameters replicated.
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  replicated = sharding.replicated(mesh)
  state = jax.device_put(state, replicated)
  train_step = step_lib.jit_train_step(step_lib.make_train_step(graphdef, tx, schedule, tasks, weights,
                                                                total_steps),
                                       replicated, sharding.batch_sharding(mesh), replicated)
  return Experiment(config, info, train_source, eval_source, tasks, weights, mesh, graphdef, state, tx, schedule,
                    steps_per_epoch, total_steps, train_step, init_info)
