"""What a run leaves behind and shows: JSON-lines metrics, TensorBoard events, a progress line."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax


class MetricWriter:
  """Appends ``{'step', 'split', metrics...}`` to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

  Only process 0 writes. A resumed run appends, so the file holds the whole history of the workdir.
  """

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if self.active:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
    if not self.active:
      return
    row = {'step': int(step), 'split': split, **{k: float(v) for k, v in metrics.items()}}
    with open(self.path, 'a', encoding='utf-8') as f:
      f.write(json.dumps(row) + '\n')
    for k, v in metrics.items():
      self._tb.add_scalar(f'{split}/{k}', float(v), int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  return f'{h}h{rem // 60:02d}m' if h else f'{rem // 60}m{rem % 60:02d}s'


class Progress:
  """Step of total, loss, images/s and ETA, measured between log points (compile time excluded)."""

  def __init__(self, total_steps: int, images_per_step: int, start_step: int):
    self.total, self.images_per_step = total_steps, images_per_step
    self._t, self._step = None, start_step

  def start(self, step: int) -> None:
    """Call after the first (compiling) step so that compile time does not count as throughput."""
    self._t, self._step = time.perf_counter(), step

  def line(self, step: int, metrics: dict[str, float]) -> tuple[str, float]:
    """The progress line at ``step`` and the images/s since the previous call (0.0 if unknown)."""
    now = time.perf_counter()
    rate = 0.0
    if self._t is not None and step > self._step:
      rate = (step - self._step) * self.images_per_step / (now - self._t)
    eta = (self.total - step) * self.images_per_step / rate if rate else float('nan')
    self._t, self._step = now, step
    shown = ' '.join(f'{k}={v:.4g}' for k, v in metrics.items() if k in ('loss', 'lr') or k.endswith('top1')
                     or k.endswith('acc'))
    pct = 100.0 * step / max(self.total, 1)
    msg = (f'step {step}/{self.total} ({pct:.0f}%) {shown} | {rate:.0f} img/s | '
           f'ETA {_duration(eta) if rate else "?"}')
    return msg, rate


def log(msg: str) -> None:
  """Progress for people: stdout of process 0 only (absl logging is left to libraries' chatter)."""
  if jax.process_index() == 0:
    print(msg, flush=True)
