"""The trainer, read top to bottom: lock, build, restore, loop (step, log, evaluate, checkpoint), final evaluation.

What is evaluated is not the trainer's business: it runs the evaluators of the run (jaxssl/eval/base.py) at
every evaluation and at the end, and writes what they return.

How a run ends, by exit code (``train_and_evaluate(...)['exit_code']``; jaxssl.main exits with it):
0 finished (or ``stop_after``); 143 (``PREEMPTED_EXIT_CODE``) stopped by SIGTERM or Ctrl-C, checkpointed, rerun to
resume (a signal that comes after the last step, during the final evaluation, leaves the run finished, with 0,
and ``stop_asked`` in the result: the benchmark and a study stop before their next run); 3
(``DIVERGED_EXIT_CODE``) stopped by a non-finite loss or gradient, nothing saved after the last good step; errors
with one line (another run holds the workdir, a checkpoint of another config, a full or read-only disk, ...) are
exceptions, which jaxssl.main prints as ``error: ...`` and exits 2 with.

Divergence: the train step never applies a non-finite update (jaxssl/train/step.py) and marks the step; the
loop reads that mark with the other metrics, at each log point, evaluation, checkpoint and the end, so it
costs no device sync of its own. ``optim.skip_nonfinite_steps=N`` lets up to N such steps pass (counted over the
whole run, resumes included: a run that keeps producing them is diverging, not unlucky); the first one beyond
stops the run. Every checkpoint is preceded by that check, so a checkpoint never follows a step that should
have stopped the run, and the good checkpoints are never rotated out for bad ones.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxssl import files, ops, sharding
from jaxssl.data import pipeline
from jaxssl.eval.base import build_evaluators, run_phase
from jaxssl.runlog import MetricWriter, Progress, log, write_json, write_text, writing
from jaxssl.train import checkpoint as ckpt_lib, lock, transfer
from jaxssl.train.checkpoint import Checkpointer
from jaxssl.train.experiment import build_experiment
from jaxssl.train.state import count_params

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the run saved a checkpoint and did not finish
DIVERGED_EXIT_CODE = 3     # a non-finite loss or gradient: the run stopped, its last good checkpoints kept


def _write_config(config: ml_collections.ConfigDict, workdir: str, step: int) -> None:
  """Keeps the first config of a workdir; a resumed run with a different config is recorded beside it."""
  if jax.process_index():
    return
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  path = files.join(workdir, 'config.json')
  if files.exists(path):
    if files.read_text(path) == text:
      return
    path = files.join(workdir, f'config.step{step}.json')
    log(f'note: the config differs from the one this workdir started with; saved as {path}')
  write_text(path, text)


def _write_artifacts(tasks, workdir: str) -> None:
  """Arrays a task is defined by (e.g. the jigsaw permutation set), saved as artifacts/<task>/<name>."""
  if jax.process_index():
    return
  for task in tasks:
    for name, array in task.artifacts().items():
      files.makedirs(files.join(workdir, 'artifacts', task.name))
      files.save_array(files.join(workdir, 'artifacts', task.name, name), array)  # adds .npy if missing


class _StopFlag:
  """SIGTERM (preemption, Ctrl-C of a scheduler) asks the loop to checkpoint and leave at the next step.

  With several processes, one host may be preempted alone, and a process that saved and left on its own would
  leave the others waiting in a collective forever. So every step each process votes (``agreed``): a tiny jitted
  max over one flag per device, dispatched behind the step and read one step later (the host waits for step k
  when it has dispatched step k + 1: it runs at most one step ahead, which the device never notices).
  All processes read the same vote at the same step, so all stop after the same step, save it together and exit
  143. One process needs no vote: its own flag decides at once.
  """

  def __init__(self, mesh: jax.sharding.Mesh):
    self.signum = None
    self.signaled_anywhere = False   # this process's signal, or another's (the vote)
    self._previous = {}
    self._mesh = mesh
    self._vote = None
    if jax.process_count() > 1:
      self._any = jax.jit(lambda flags: flags.max() > 0, out_shardings=sharding.replicated(mesh))

  def agreed(self) -> bool:
    """Called once per step by every process: whether to stop after this step (the same answer everywhere)."""
    if jax.process_count() == 1:
      self.signaled_anywhere = self.signum is not None
    else:
      local = np.full(len(self._mesh.local_devices), self.signum is not None, np.int32)
      previous, self._vote = self._vote, self._any(sharding.shard_batch(local, self._mesh))
      self.signaled_anywhere = previous is not None and bool(previous)
    return self.signaled_anywhere

  def after_last_step(self) -> bool:
    """Once the run is finished (last step, final evaluation): whether a stop was asked during this run that no
    step acted on (one that came during the final evaluation). The run is done either way; a caller with more
    runs to go (the benchmark, a study) stops before the next. With several processes, one more vote (read one
    call late, so two calls) makes the answer the same everywhere."""
    if jax.process_count() > 1:
      self.agreed()
    return self.agreed()

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


class _Window:
  """The metrics of the steps since the last log point, read from the device only when the loop must know
  them (log, evaluation, checkpoint, end), and the count of non-finite steps the run let pass."""

  def __init__(self, config: ml_collections.ConfigDict, skipped: int):
    self.allowed = int(config.optim.skip_nonfinite_steps)
    self.lr = config.optim.lr
    self.skipped = skipped       # over the whole run: saved in each checkpoint's meta
    self.rows: list[tuple[int, Any]] = []
    self._read = 0
    self._new_skips: list[tuple[int, dict[str, float]]] = []

  def add(self, step: int, metrics) -> None:
    self.rows.append((step, metrics))

  def check(self) -> tuple[int, dict[str, float]] | None:
    """Reads the unread steps (one transfer); (step, metrics) of the step that stops the run, or None."""
    unread = self.rows[self._read:]
    if not unread:
      return None
    host = jax.device_get([m for _, m in unread])
    self.rows[self._read:] = [(step, m) for (step, _), m in zip(unread, host)]
    self._read = len(self.rows)
    for step, m in self.rows[-len(unread):]:
      if not m['nonfinite']:
        continue
      self.skipped += 1
      if self.skipped > self.allowed:
        return step, m
      self._new_skips.append((step, m))
    return None

  def stop_line(self, step: int, m: dict[str, float], last_saved: int) -> str:
    """The one line of a run stopped at ``step`` by the non-finite metrics ``m``."""
    loss, gnorm = float(m['loss']), float(m['grad_norm'])
    if not math.isfinite(loss):
      what = f'loss {loss} at step {step} (gradient norm {gnorm})'
    elif not math.isfinite(gnorm):
      what = f'gradient norm {gnorm} at step {step} (loss {loss:.4g})'
    else:
      what = f'update at step {step}: the parameters or optimizer state would not be finite (loss {loss:.4g})'
    allowed = (f'{self.skipped} non-finite steps, more than --config.optim.skip_nonfinite_steps={self.allowed}'
               if self.allowed else 'set --config.optim.skip_nonfinite_steps=N to skip up to N such steps')
    kept = (f'nothing after step {step - 1} is saved, the checkpoints up to step {last_saved} are kept'
            if last_saved else 'no checkpoint was saved')
    return (f'stopped: non-finite {what}; {kept}. Fix: lower --config.optim.lr (now {self.lr:g}) or set '
            f'--config.optim.grad_clip_norm, then rerun (it resumes from the last checkpoint); or {allowed}')

  def mean(self) -> dict[str, float]:
    """The mean of each metric over the window's finite steps, and how many were skipped; starts a new window."""
    self.check()
    good = [m for _, m in self.rows if not m['nonfinite']]
    out = {k: float(np.mean([m[k] for m in good])) for k in good[0] if k != 'nonfinite'} if good else {}
    bad = len(self.rows) - len(good)
    if bad:
      out['nonfinite_steps'] = float(bad)
    self.rows, self._read = [], 0
    return out

  def skips_to_report(self) -> str | None:
    if not self._new_skips:
      return None
    step, m = self._new_skips[0]
    line = (f"warning: skipped {len(self._new_skips)} non-finite step(s), the first at step {step} (loss "
            f"{float(m['loss'])}, gradient norm {float(m['grad_norm'])}); {self.skipped} of "
            f'--config.optim.skip_nonfinite_steps={self.allowed} used')
    self._new_skips = []
    return line


class _InputWait:
  """How much of the training loop's time goes to waiting for the next batch (``next`` on the iterator) while the
  device has nothing to do, per log interval (evaluations and checkpoints left out): a run whose pipeline cannot
  keep up with its step says so.

  The step runs asynchronously: while the host waits for a batch the device is usually still running the
  previous step, and that wait costs nothing. So a wait counts only where the previous step's outputs are ready
  when the batch arrives (``is_ready``, no sync): the device went idle at some point of it, and the share bounds
  its idle time from above; a pipeline that keeps up shows about 0. The first interval over
  ``INPUT_BOUND`` logs a warning with what to raise; the end of training logs the share over the whole run and
  its worst interval. (Not a metrics.jsonl field: its rows hold one timing figure, ``images_per_s``, that a
  resumed run may change.)
  """
  INPUT_BOUND = 0.10

  def __init__(self, inputs: pipeline.InputSettings, clock=time.perf_counter):
    self.inputs, self._clock = inputs, clock
    self._waited = self._paused = self._total_waited = self._total_span = 0.0
    self._t0 = None
    self.shares: list[tuple[int, float]] = []   # (step, share) of every interval

  @contextlib.contextmanager
  def waiting(self, pending=None):
    """Times the block; it counts unless ``pending`` (the previous step's outputs) is still being computed."""
    t0 = self._clock()
    try:
      yield
    finally:
      spent = self._clock() - t0
      if pending is None or all(x.is_ready() for x in jax.tree.leaves(pending) if hasattr(x, 'is_ready')):
        self._waited += spent

  @contextlib.contextmanager
  def paused(self):
    t0 = self._clock()
    try:
      yield
    finally:
      self._paused += self._clock() - t0

  def start(self) -> None:
    """After the first (compiling) step: the first interval starts here."""
    self._waited, self._paused, self._t0 = 0.0, 0.0, self._clock()

  def interval(self, step: int) -> str | None:
    """Ends the interval at ``step``; the input-bound warning, the first time its share is over the bound."""
    if self._t0 is None:
      return None
    now = self._clock()
    span = now - self._t0 - self._paused
    share = min(1.0, self._waited / span) if span > 0 else 0.0
    self._total_waited += min(self._waited, span)
    self._total_span += max(span, 0.0)
    self._waited, self._paused, self._t0 = 0.0, 0.0, now
    warned = any(s > self.INPUT_BOUND for _, s in self.shares)
    self.shares.append((step, share))
    if share <= self.INPUT_BOUND or warned:
      return None
    s = self.inputs
    return (f'warning: input-bound: input_wait={100 * share:.0f}% (the step waited that share of the steps up to '
            f'{step} for its next batch; {s.line().split(": ", 1)[1].split(" (")[0]} on {s.cores} cores): '
            'raise --config.data.num_workers (or read_threads); `python -m jaxssl.bench --config ...` prints what '
            'each worker makes')

  def summary(self) -> str | None:
    """The run's line: the share of its training time spent waiting for input, and the worst interval."""
    if not self.shares or self._total_span <= 0:
      return None
    step, worst = max(self.shares, key=lambda x: x[1])
    return (f'input_wait={100 * self._total_waited / self._total_span:.0f}% of the training time (worst interval '
            f'{100 * worst:.0f}%, up to step {step})')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_after: int | None = None) -> dict[str, Any]:
  """Trains (resuming from the latest readable checkpoint in ``workdir``), evaluates, and writes the summary.

  ``stop_after``: leave after this many steps of this call, checkpointed, as a preemption would (tests).
  Returns ``{'step', 'eval': metrics, 'finished': bool, 'exit_code'}``, and ``'stop_asked'`` (a signal after the
  last step) where finished (exit codes: the module's docstring).
  """
  with writing(workdir, workdir):
    files.makedirs(workdir)
  # Before anything reads or writes the run: another live run on this workdir is one line, not a mixed run.
  with lock.hold(workdir, config.lock_timeout_s) as held, writing('', workdir):
    summary = _train(config, workdir, stop_after, held)
    if summary['finished']:
      _write_summary(workdir, config, summary)
  return summary


def _train(config: ml_collections.ConfigDict, workdir: str, stop_after: int | None, held) -> dict[str, Any]:
  exp = build_experiment(config, load_init=not transfer.has_checkpoint(workdir))  # init_from: fresh runs only
  fingerprint = ckpt_lib.data_fingerprint(config.data, len(exp.train_source), seed=config.seed,
                                          batch_size=config.batch_size)
  with contextlib.ExitStack() as cleanup, _StopFlag(exp.mesh) as stop:
    # Closed on every exit: grain workers hold shared memory, async saves must land, events must flush.
    inputs = pipeline.input_settings(config.data)
    train_iter = pipeline.train_iterator(exp.train_source, exp.tasks, global_batch=config.batch_size,
                                         seed=config.seed, mesh=exp.mesh, **inputs.options())
    cleanup.callback(getattr(train_iter, 'close', lambda: None))
    ckpt = Checkpointer(files.join(workdir, 'checkpoints'), max_to_keep=config.keep_checkpoints)
    cleanup.callback(ckpt.close)
    # The run's key, a global (replicated) array like the state; each step folds its number in (train/step.py).
    state, meta = exp.state, {}
    rng = jax.device_put(jax.random.PRNGKey(config.seed), sharding.replicated(exp.mesh))
    if ckpt.latest_step() is not None:
      try:
        state, meta = ckpt.restore(None, state, sharding.replicated(exp.mesh), data_iter=train_iter,
                                        set_aside=True)
      except ckpt_lib.StateMismatchError as e:
        raise ckpt_lib.config_mismatch(e, workdir, config) from None
      ckpt_lib.check_data_position(files.join(ckpt.directory, str(int(state.step))), meta, fingerprint,
                                   train_iter.get_state(), int(state.step))
      log(f'resumed from {ckpt.directory} at step {int(state.step)}')
    step = last_saved = int(state.step)
    _write_config(config, workdir, step)
    if exp.init_info:
      transfer.write_init_info(workdir, exp.init_info)
    _write_artifacts(exp.tasks, workdir)
    log(f'{config.model.name} ({count_params(state.params):,} parameters) on {exp.info.name}: '
        f'{len(exp.train_source)} train / {len(exp.eval_source)} {config.data.eval_split} records, '
        f'{exp.steps_per_epoch} steps/epoch, {exp.total_steps} steps, batch {config.batch_size} over '
        f'{exp.mesh.size} {jax.devices()[0].platform} device(s) in {jax.process_count()} process(es)')
    log(ops.describe_path())
    log(inputs.line())
    # Drops the rows of the steps this run repeats; resumed at its end, it repeats the final evaluation.
    writer = MetricWriter(workdir, start_step=step,
                          rerun_split=config.data.eval_split if step >= exp.total_steps else None)
    cleanup.callback(writer.close)
    evaluators = build_evaluators(exp.eval_context(workdir))
    window = _Window(config, int(meta.get('nonfinite_skipped', 0)) if isinstance(meta, dict) else 0)

    def save(force=False):
      nonlocal last_saved
      if held is not None and jax.process_count() == 1:  # several processes: only process 0 could know; no check
        held.check()  # a run whose lock was taken over (a frozen host) must not write over the new holder's run
      ckpt.save(step, state, train_iter, {'epoch': step / exp.steps_per_epoch, 'data': fingerprint,
                                               'nonfinite_skipped': window.skipped}, force=force)
      last_saved = step

    def run_eval(phase):
      return run_phase(evaluators, state, phase, lambda m: writer.write(step, config.data.eval_split, m))

    def diverged(bad):
      log(window.stop_line(*bad, last_saved))
      return {'step': step, 'eval': eval_metrics, 'finished': False, 'exit_code': DIVERGED_EXIT_CODE,
              'diverged_at': int(bad[0])}   # the first non-finite step (found at a later log point: 'step')

    progress = Progress(exp.total_steps, config.batch_size, step)
    waits = _InputWait(inputs)
    first = step
    eval_metrics: dict[str, float] = {}
    metrics = None   # the last step's, on the device
    while step < exp.total_steps:
      with waits.waiting(metrics):
        host_batch = next(train_iter)
      state, metrics = exp.train_step(state, sharding.shard_batch(host_batch, exp.mesh), rng)
      step += 1
      window.add(step, metrics)
      if step == first + 1:  # the first step compiled; throughput counts from here
        jax.block_until_ready(metrics)
        progress.start(step)
        waits.start()
      interrupted = stop.agreed() or (stop_after is not None and step - first >= stop_after)
      to_eval = bool(config.eval_every) and step % config.eval_every == 0 and step < exp.total_steps
      to_save = step % config.checkpoint_every == 0 or interrupted
      if step % config.log_every == 0 or step == exp.total_steps or to_eval or to_save:
        if (bad := window.check()) is not None:  # before the state is logged, evaluated or saved
          return diverged(bad)
      if step % config.log_every == 0 or step == exp.total_steps:
        mean = window.mean()
        msg, rate = progress.line(step, mean)
        writer.write(step, 'train', {**mean, 'images_per_s': rate, 'epoch': step / exp.steps_per_epoch})
        log(msg)
        if (bound := waits.interval(step)) is not None:
          log(bound)
        if (skips := window.skips_to_report()) is not None:
          log(skips)
      if to_eval:
        with waits.paused():
          eval_metrics = run_eval('eval')
        log(f'eval {config.data.eval_split} @ {step}: {fmt(eval_metrics)}')
      if to_save:
        with waits.paused():
          save(force=interrupted)
      if interrupted and step < exp.total_steps:
        why = (f'signal {stop.signum}' if stop.signum is not None else 'another process was stopped'
               if stop.signaled_anywhere else f'stop_after={stop_after}')
        log(f'stopped at step {step}/{exp.total_steps} ({why}); checkpoint saved. Rerun the same command to resume.')
        return {'step': step, 'eval': eval_metrics, 'finished': False,
                'exit_code': PREEMPTED_EXIT_CODE if stop.signaled_anywhere else 0}  # a signal wins over stop_after

    if (bad := window.check()) is not None:
      return diverged(bad)
    if (waited := waits.summary()) is not None:
      log(waited)
    if ckpt.latest_step() != step:  # first: an evaluator that fails must not cost the steps since the last save
      save(force=True)
    eval_metrics = run_eval('final')
    log(f'final {config.data.eval_split} @ {step}: {fmt(eval_metrics)}')  # before any file: a full disk loses nothing
    asked = stop.after_last_step()
  if asked:
    log(f"a stop was asked after the last step ({f'signal {stop.signum}' if stop.signum else 'another process'}); "
        'the run is finished')
  return {'step': step, 'eval': eval_metrics, 'finished': True, 'exit_code': 0, 'stop_asked': asked}


def fmt(metrics: dict[str, float]) -> str:
  return ', '.join(f'{k}={v:.4f}' for k, v in metrics.items() if isinstance(v, (int, float)))


def _write_summary(workdir: str, config, summary: dict[str, Any]) -> None:
  if jax.process_index():
    return
  write_json(files.join(workdir, 'final_metrics.json'),
             {'step': summary['step'], 'split': config.data.eval_split, **summary['eval']})
