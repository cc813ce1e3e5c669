"""Training and evaluation, read top to bottom: data, tasks, model, mesh, checkpoint, loop."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx

from jaxssl.data import datasets, pipeline
from jaxssl.tasks import build_tasks
from jaxssl.train import mesh as mesh_lib
from jaxssl.train import optim, step as step_lib, transfer
from jaxssl.train.checkpoint import Checkpointer
from jaxssl.train.logging import MetricWriter, Progress, log
from jaxssl.train.state import TrainState, build_model, count_params, init_train_state

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the run saved a checkpoint and did not finish


@dataclasses.dataclass
class Experiment:
  """Everything built from a config before the first step; shared by train, eval and bench."""
  config: ml_collections.ConfigDict
  info: datasets.DatasetInfo
  train_source: Any
  eval_source: Any
  tasks: list
  weights: dict[str, float]
  mesh: jax.sharding.Mesh
  graphdef: nnx.GraphDef
  state: TrainState
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  steps_per_epoch: int
  total_steps: int
  train_step: Callable
  eval_step: Callable
  init_info: dict[str, Any] | None = None   # where the backbone came from (config.init_from), if anywhere


def build_experiment(config: ml_collections.ConfigDict, *, load_init: bool = True) -> Experiment:
  """``load_init``: copy ``config.init_from``'s backbone in (False where a checkpoint of the run itself will
  replace the state anyway: resume, eval)."""
  # Data.
  info = datasets.get_dataset(config.data.name, config.data)
  train_source = datasets.load_split(info, config.data.train_split, config.data, config.data.get('train_limit', 0))
  eval_source = datasets.load_split(info, config.data.eval_split, config.data, config.data.get('eval_limit', 0))
  if config.data.get('train_fraction', 1.0) < 1.0:  # label-efficiency studies: the same images for every init
    from jaxssl.data import subsets  # pylint: disable=import-outside-toplevel
    train_source = subsets.IndexedSubset(train_source, subsets.stratified_subset(
        subsets.source_labels(train_source), config.data.train_fraction, config.data.get('subset_seed', 0)))
  steps_per_epoch = max(1, len(train_source) // config.batch_size)
  total_steps = int(config.total_steps or round(config.num_epochs * steps_per_epoch))

  # Tasks, model, optimizer.
  tasks, weights = build_tasks(config.tasks, info)
  model = build_model(config.model, info.input_shape, tasks, config.seed)
  init_info = None
  if load_init and config.get('init_from', ''):  # before the optimizer state exists: it starts from these
    init_info = transfer.load_backbone(model, transfer.resolve_checkpoint(config.init_from,
                                                                          config.get('init_step', -1)))
    log(f"backbone initialized from {init_info['checkpoint']} ({init_info['parameters']:,} values)")
  transfer.check_frozen_tasks(config.optim, tasks)
  layers = None
  if config.optim.get('trainable', 'all').startswith('last:'):
    layers = transfer.backbone_layers(model.backbone, getattr(tasks[0], 'backbone_input_shape',
                                                              lambda s: s)(tuple(info.input_shape)))
  tx, schedule = optim.make_optimizer(config.optim, total_steps, steps_per_epoch, backbone_layers=layers)
  graphdef, state = init_train_state(model, tx)

  # Mesh: batch split over every device, parameters replicated.
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(config.batch_size, mesh)
  mesh_lib.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  replicated = mesh_lib.replicated(mesh)
  state = jax.device_put(state, replicated)
  train_step, eval_step = step_lib.jit_steps(
      step_lib.make_train_step(graphdef, tx, schedule, tasks, weights),
      step_lib.make_eval_step(graphdef, tasks, weights),
      replicated, mesh_lib.batch_sharding(mesh), replicated)
  return Experiment(config, info, train_source, eval_source, tasks, weights, mesh, graphdef, state, tx, schedule,
                    steps_per_epoch, total_steps, train_step, eval_step, init_info)


def evaluate(exp: Experiment, state: TrainState, source=None) -> dict[str, float]:
  """Exact metrics over a whole split: every record once, padding rows weighted 0."""
  sums = None
  for batch in pipeline.eval_batches(exp.eval_source if source is None else source, exp.tasks,
                                     global_batch=exp.config.eval_batch_size, seed=exp.config.seed):
    out = exp.eval_step(state, mesh_lib.shard_batch(batch, exp.mesh))
    sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
  return step_lib.finish_eval(jax.device_get(sums), exp.tasks)


def _mean_metrics(window: list[dict[str, jax.Array]]) -> dict[str, float]:
  stacked = jax.device_get(window)
  return {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}


def _write_config(config: ml_collections.ConfigDict, workdir: str, step: int) -> None:
  """Keeps the first config of a workdir; a resumed run with a different config is recorded beside it."""
  if jax.process_index():
    return
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      if f.read() == text:
        return
    path = os.path.join(workdir, f'config.step{step}.json')
    log(f'note: the config differs from the one this workdir started with; saved as {path}')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)


def _write_artifacts(tasks, workdir: str) -> None:
  """Arrays a task is defined by (e.g. the jigsaw permutation set), saved as artifacts/<task>/<name>."""
  if jax.process_index():
    return
  for task in tasks:
    for name, array in (task.artifacts() if hasattr(task, 'artifacts') else {}).items():
      os.makedirs(os.path.join(workdir, 'artifacts', task.name), exist_ok=True)
      np.save(os.path.join(workdir, 'artifacts', task.name, name), np.asarray(array))  # adds .npy if missing


class _StopFlag:
  """SIGTERM (preemption, Ctrl-C of a scheduler) asks the loop to checkpoint and leave at the next step."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.signum = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _conv_path_line(impl: str) -> str:
  """Which convolutions this run uses (jaxssl/ops), and on the CPU why not oneDNN's where they are missing."""
  from jaxssl.ops import conv as conv_ops, onednn  # pylint: disable=import-outside-toplevel
  path = conv_ops.cpu_path(impl)
  what = {'xla': "XLA's own", 'im2col': 'gathered-window matmuls', 'onednn': "oneDNN's (custom calls)"}[path]
  line = f'convolutions: {what} (conv_impl={impl})'
  if path == 'onednn':
    bf16 = ('float32 and bfloat16' if onednn.supports(jax.numpy.bfloat16)
            else 'float32; bfloat16 takes the gathered path (oneDNN has no bf16 kernels for this CPU)')
    line += f', with training BatchNorm; {bf16}'
  if impl == 'auto' and path == 'im2col':
    line += f'; oneDNN unavailable: {onednn.unavailable_reason()}'
  return line


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_after: int | None = None) -> dict[str, Any]:
  """Trains (resuming from the latest checkpoint in ``workdir``), evaluates, and writes the summary.

  ``stop_after``: leave after this many steps of this call, checkpointed, as a preemption would (tests).
  Returns ``{'step', 'eval': metrics, 'finished': bool, 'exit_code'}``.
  """
  os.makedirs(workdir, exist_ok=True)
  exp = build_experiment(config, load_init=not transfer.has_checkpoint(workdir))  # init_from: fresh runs only
  with contextlib.ExitStack() as cleanup, _StopFlag() as stop:
    # Closed on every exit: grain workers hold shared memory, async saves must land, events must flush.
    train_iter = pipeline.train_iterator(exp.train_source, exp.tasks, global_batch=config.batch_size,
                                         seed=config.seed, **pipeline.iterator_options(config.data))
    cleanup.callback(getattr(train_iter, 'close', lambda: None))
    ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'), max_to_keep=config.keep_checkpoints)
    cleanup.callback(ckpt.close)
    state, rng = exp.state, jax.random.PRNGKey(config.seed)
    if ckpt.latest_step() is not None:
      state, rng, _ = ckpt.restore(None, state, mesh_lib.replicated(exp.mesh), data_iter=train_iter)
      log(f'resumed from {ckpt.directory} at step {int(state.step)}')
    step = int(state.step)
    _write_config(config, workdir, step)
    if exp.init_info:
      transfer.write_init_info(workdir, exp.init_info)
    _write_artifacts(exp.tasks, workdir)
    log(f'{config.model.name} ({count_params(state.params):,} parameters) on {exp.info.name}: '
        f'{len(exp.train_source)} train / {len(exp.eval_source)} {config.data.eval_split} records, '
        f'{exp.steps_per_epoch} steps/epoch, {exp.total_steps} steps, batch {config.batch_size} over '
        f'{exp.mesh.size} {jax.devices()[0].platform} device(s) in {jax.process_count()} process(es)')
    log(_conv_path_line(config.model.get('conv_impl', 'auto')))
    writer = MetricWriter(workdir)
    cleanup.callback(writer.close)

    def save(force=False):
      ckpt.save(step, state, rng, train_iter, {'epoch': step / exp.steps_per_epoch}, force=force)

    def run_eval():
      metrics = evaluate(exp, state)
      writer.write(step, config.data.eval_split, metrics)
      return metrics

    progress = Progress(exp.total_steps, config.batch_size, step)
    window, first = [], step
    eval_metrics: dict[str, float] = {}
    while step < exp.total_steps:
      state, metrics = exp.train_step(state, mesh_lib.shard_batch(next(train_iter), exp.mesh), rng)
      step += 1
      window.append(metrics)
      if step == first + 1:  # the first step compiled; throughput counts from here
        jax.block_until_ready(metrics)
        progress.start(step)
      if step % config.log_every == 0 or step == exp.total_steps:
        mean = _mean_metrics(window)
        window = []
        msg, rate = progress.line(step, mean)
        writer.write(step, 'train', {**mean, 'images_per_s': rate, 'epoch': step / exp.steps_per_epoch})
        log(msg)
      if config.eval_every and step % config.eval_every == 0 and step < exp.total_steps:
        eval_metrics = run_eval()
        log(f'eval {config.data.eval_split} @ {step}: {_fmt(eval_metrics)}')
      interrupted = stop.signum is not None or (stop_after is not None and step - first >= stop_after)
      if step % config.checkpoint_every == 0 or interrupted:
        save(force=interrupted)
      if interrupted and step < exp.total_steps:
        why = f'signal {stop.signum}' if stop.signum is not None else f'stop_after={stop_after}'
        log(f'stopped at step {step}/{exp.total_steps} ({why}); checkpoint saved. Rerun the same command to resume.')
        return {'step': step, 'eval': eval_metrics, 'finished': False,
                'exit_code': PREEMPTED_EXIT_CODE if stop.signum is not None else 0}

    eval_metrics = {**run_eval(), **_class_report(exp, state, workdir, 'confusion'),
                    **_attribute_report(exp, state, workdir)}
    _write_pictures(exp, state, workdir)
    if ckpt.latest_step() != step:
      save(force=True)
  summary = {'step': step, 'eval': eval_metrics, 'finished': True, 'exit_code': 0}
  _write_summary(workdir, config, summary)
  log(f'final {config.data.eval_split} @ {step}: {_fmt(eval_metrics)}')
  return summary


def _fmt(metrics: dict[str, float]) -> str:
  return ', '.join(f'{k}={v:.4f}' for k, v in metrics.items() if isinstance(v, (int, float)))


def _class_report(exp: Experiment, state: TrainState, workdir: str, stem: str) -> dict[str, Any]:
  """Per-class top-1 of the classification tasks; their confusion matrices go to <workdir>/<stem>.csv|png."""
  from jaxssl.eval import confusion  # pylint: disable=import-outside-toplevel
  return confusion.classification_report(exp, state, workdir, stem)


def _attribute_report(exp: Experiment, state: TrainState, workdir: str) -> dict[str, Any]:
  """Multi-task (DeepFashion) runs: the attribute threshold chosen on the validation split and saved to
  <workdir>/thresholds.json (--mode=predict uses it), and the report split's F1s and recall at it."""
  from jaxssl.eval import multitask  # pylint: disable=import-outside-toplevel
  return multitask.attribute_report(exp, state, workdir)


def _write_pictures(exp: Experiment, state: TrainState, workdir: str) -> None:
  """filters.png (the first conv's kernels); for a linear probe also embedding.png|csv (PCA of the probed
  layer on eval images). A second or two: one forward pass over 2,000 images at most."""
  from jaxssl.eval import embedding, filters  # pylint: disable=import-outside-toplevel
  filters.write_run_filters(exp, state, workdir)
  embedding.write_probe_embedding(exp, state, workdir)


def _write_summary(workdir: str, config, summary: dict[str, Any]) -> None:
  if jax.process_index():
    return
  from jaxssl.eval import plots  # pylint: disable=import-outside-toplevel
  with open(os.path.join(workdir, 'final_metrics.json'), 'w', encoding='utf-8') as f:
    json.dump({'step': summary['step'], 'split': config.data.eval_split, **summary['eval']}, f, indent=2)
  plots.plot_curves(workdir, eval_split=config.data.eval_split)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """``--mode=eval``: restore a checkpoint (``config.eval_step``, -1 = latest) and evaluate one split."""
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f'no checkpoints in {workdir}: train first with the same --workdir '
                            '(--mode=train), or point --workdir at a trained run')
  exp = build_experiment(config, load_init=False)
  ckpt = Checkpointer(ckpt_dir, read_only=True)
  want = None if config.eval_step < 0 else config.eval_step
  state, _, _ = ckpt.restore(want, exp.state, mesh_lib.replicated(exp.mesh))
  t0 = time.perf_counter()
  step = int(state.step)
  metrics = {**evaluate(exp, state),
             **_class_report(exp, state, workdir, f'confusion_{config.data.eval_split}_step{step}'),
             **_attribute_report(exp, state, workdir)}
  result = {'step': step, 'split': config.data.eval_split, **metrics}
  if jax.process_index() == 0:
    path = os.path.join(workdir, f'eval_{config.data.eval_split}_step{step}.json')
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)
    log(f'eval {config.data.eval_split} @ step {step} ({time.perf_counter() - t0:.1f}s): {_fmt(metrics)} -> {path}')
  ckpt.close()
  return result
