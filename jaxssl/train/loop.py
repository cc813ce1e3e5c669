"""The trainer, read top to bottom: build, restore, loop (step, log, evaluate, checkpoint), final evaluation.

What is evaluated is not the trainer's business: it runs the evaluators of the run (jaxssl/eval/base.py) at
every evaluation and at the end, and writes what they return.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxssl import ops, sharding
from jaxssl.data import pipeline
from jaxssl.eval.base import build_evaluators, run_phase
from jaxssl.runlog import MetricWriter, Progress, log
from jaxssl.train import transfer
from jaxssl.train.checkpoint import Checkpointer
from jaxssl.train.experiment import build_experiment
from jaxssl.train.state import count_params

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the run saved a checkpoint and did not finish


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
    for name, array in task.artifacts().items():
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
      state, rng, _ = ckpt.restore(None, state, sharding.replicated(exp.mesh), data_iter=train_iter)
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
    log(ops.describe_path())
    writer = MetricWriter(workdir)
    cleanup.callback(writer.close)
    evaluators = build_evaluators(exp.eval_context(workdir))

    def save(force=False):
      ckpt.save(step, state, rng, train_iter, {'epoch': step / exp.steps_per_epoch}, force=force)

    def run_eval(phase):
      return run_phase(evaluators, state, phase, lambda m: writer.write(step, config.data.eval_split, m))

    progress = Progress(exp.total_steps, config.batch_size, step)
    window, first = [], step
    eval_metrics: dict[str, float] = {}
    while step < exp.total_steps:
      state, metrics = exp.train_step(state, sharding.shard_batch(next(train_iter), exp.mesh), rng)
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
        eval_metrics = run_eval('eval')
        log(f'eval {config.data.eval_split} @ {step}: {fmt(eval_metrics)}')
      interrupted = stop.signum is not None or (stop_after is not None and step - first >= stop_after)
      if step % config.checkpoint_every == 0 or interrupted:
        save(force=interrupted)
      if interrupted and step < exp.total_steps:
        why = f'signal {stop.signum}' if stop.signum is not None else f'stop_after={stop_after}'
        log(f'stopped at step {step}/{exp.total_steps} ({why}); checkpoint saved. Rerun the same command to resume.')
        return {'step': step, 'eval': eval_metrics, 'finished': False,
                'exit_code': PREEMPTED_EXIT_CODE if stop.signum is not None else 0}

    eval_metrics = run_eval('final')
    if ckpt.latest_step() != step:
      save(force=True)
  summary = {'step': step, 'eval': eval_metrics, 'finished': True, 'exit_code': 0}
  _write_summary(workdir, config, summary)
  log(f'final {config.data.eval_split} @ {step}: {fmt(eval_metrics)}')
  return summary


def fmt(metrics: dict[str, float]) -> str:
  return ', '.join(f'{k}={v:.4f}' for k, v in metrics.items() if isinstance(v, (int, float)))


def _write_summary(workdir: str, config, summary: dict[str, Any]) -> None:
  if jax.process_index():
    return
  with open(os.path.join(workdir, 'final_metrics.json'), 'w', encoding='utf-8') as f:
    json.dump({'step': summary['step'], 'split': config.data.eval_split, **summary['eval']}, f, indent=2)
