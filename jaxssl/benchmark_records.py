"""The benchmark's records (jaxssl/benchmark.py): the seconds each part took (:class:`Ledger`), what measured it
(:func:`provenance`, one row of calls.jsonl per call), the JSON files it reads back, and whether a made part's
settings are today's (:func:`settings_changes`), and a test cell started from its selection cell's finished
training (:func:`reuse_selection`)."""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import sys
import threading
import time
from typing import Any

import ml_collections

from jaxssl.benchmark_configs import config_changes
from jaxssl.runlog import write_json, write_text


class Ledger:
  """Seconds per part, summed over every call that worked on it: wall (``timings.json``) and CPU
  (``cpu_timings.json``: user + system of this process and its finished children, the grain workers). The wall
  time counts whatever else the machine did meanwhile but not the time the process was stopped (SIGSTOP or
  Ctrl-Z until SIGCONT: :class:`PauseWatch`); the CPU time counts only this process's work, so the two together say
  what a part cost and whether it ran alone (on n cores, CPU ~ n x wall when it did)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'timings.json')
    self.cpu_path = os.path.join(workdir, 'cpu_timings.json')
    self.seconds: dict[str, float] = read_json(self.path) or {}
    self.cpu_seconds: dict[str, float | None] = read_json(self.cpu_path) or {}   # None: known only in part

  @staticmethod
  def clock() -> tuple[float, float, float]:
    """Now, to pass to :meth:`add` when the part is done: (wall, CPU, paused) seconds."""
    return time.perf_counter(), _cpu_seconds(), PauseWatch.shared().paused()

  def add(self, since: tuple[float, float, float], *parts: str) -> float:
    """Adds the time since ``since`` (a :meth:`clock`) to each of ``parts``; returns the wall seconds (pauses
    left out)."""
    paused = PauseWatch.shared().paused() - since[2]
    wall, cpu = max(0.0, time.perf_counter() - since[0] - paused), _cpu_seconds() - since[1]
    for part in parts:
      if part in self.seconds and part not in self.cpu_seconds:
        self.cpu_seconds[part] = None   # wall time from before CPU time was recorded: its CPU total is unknown
      elif self.cpu_seconds.get(part, 0.0) is not None:
        self.cpu_seconds[part] = self.cpu_seconds.get(part, 0.0) + float(cpu)
      self.seconds[part] = self.seconds.get(part, 0.0) + float(wall)
    write_json(self.path, self.seconds)
    write_json(self.cpu_path, self.cpu_seconds)
    return wall

  def forget(self, parts: list[str]) -> None:
    """Drops ``parts`` (made again from scratch: their old seconds are kept where they were moved)."""
    for part in parts:
      self.seconds.pop(part, None)
      self.cpu_seconds.pop(part, None)
    write_json(self.path, self.seconds)
    write_json(self.cpu_path, self.cpu_seconds)


class PauseWatch:
  """The seconds this process was stopped (SIGSTOP or Ctrl-Z, until SIGCONT) since the watch started. A daemon
  thread sleeps ``tick`` seconds at a time; a stopped process's threads stop with it, so a sleep that ends more
  than ``gap`` seconds late was a pause, and its lateness (the pause, less up to a tick) is added. A running
  process's thread wakes within milliseconds of its time even on a loaded machine (Python hands the GIL over every
  5 ms and jax's computations release it), so ``gap`` (5 s) is far above any delay that is not a pause; a pause
  shorter than ``gap`` counts as wall time. :meth:`paused` counts a pause that has just ended before the thread
  has woken from it."""

  _shared: 'PauseWatch | None' = None
  _shared_lock = threading.Lock()

  def __init__(self, tick: float = 0.25, gap: float = 5.0):
    self.tick, self.gap = tick, gap
    self._paused, self._lock = 0.0, threading.Lock()
    self._before = time.monotonic()   # when the thread last woke
    self.pid = os.getpid()
    threading.Thread(target=self._watch, name='jaxssl-pause-watch', daemon=True).start()

  @classmethod
  def shared(cls) -> PauseWatch:
    """The process's one watch, started on first use (a forked child, whose copy has no thread, starts its own)."""
    with cls._shared_lock:
      if cls._shared is None or cls._shared.pid != os.getpid():
        cls._shared = cls()
      return cls._shared

  def paused(self) -> float:
    """Seconds paused so far."""
    with self._lock:
      return self._paused + self._late(time.monotonic())

  def _late(self, now: float) -> float:
    late = now - self._before - self.tick
    return late if late > self.gap else 0.0

  def _watch(self) -> None:
    while True:
      time.sleep(self.tick)
      with self._lock:
        now = time.monotonic()
        self._paused += self._late(now)
        self._before = now


def _cpu_seconds() -> float:
  own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The rows of a JSON-lines file; a torn line (a write cut short) is skipped."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def provenance() -> dict[str, Any]:
  """What measures now: the date (UTC), the command line, the code (the checkout's git commit, and whether
  tracked files differ from it) and the machine (host, CPU model, cores, memory, accelerator, jax)."""
  import platform  # pylint: disable=import-outside-toplevel
  import socket  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  argv = list(sys.argv)
  if argv and os.path.basename(argv[0]) == 'benchmark.py':   # run as `python -m jaxssl.benchmark`
    argv[0:1] = ['python', '-m', 'jaxssl.benchmark']
  here = os.path.dirname(os.path.abspath(__file__))

  def git(*args):
    try:
      done = subprocess.run(['git', '--no-optional-locks', '-C', here, *args], capture_output=True, text=True,
                            timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
      return None
    return done.stdout.strip() if done.returncode == 0 else None

  commit = git('rev-parse', 'HEAD')
  changed = git('status', '--porcelain', '--untracked-files=no') if commit else None
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
  except OSError:
    pass
  try:
    memory = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30
  except (ValueError, OSError, AttributeError):
    memory = None
  devices = jax.devices()
  return {'started': time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()), 'command': shlex.join(argv),
          'cwd': os.getcwd(), 'commit': commit, 'changed_files': bool(changed) if commit else None,
          'host': socket.gethostname(), 'cpu': cpu, 'cores': os.cpu_count(),
          'memory_gib': round(memory, 1) if memory else None,
          'devices': f'{len(devices)}x {devices[0].device_kind}', 'jax': jax.__version__,
          'python': platform.python_version()}


def read_json(path: str):
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def settings_changes(record: str, wanted: dict[str, Any] | None, made_with=lambda made: {}):
  """``(made, wanted, changes)``: ``record``'s JSON (None when not made), ``wanted`` as it reads back from a file
  (tuples as lists), and the settings both it and the record name that differ (:func:`config_changes`). What its
  ``settings`` do not name (made before its file kept them, or before a setting was added) is judged by what
  ``made_with(record)`` can say."""
  made, wanted = read_json(record), json.loads(json.dumps(wanted))
  if made is None or made.get('settings') == wanted:
    return made, wanted, []
  return made, wanted, config_changes({**made_with(made), **made.get('settings', {})}, wanted, ignored=())


def knn_made_with(made: dict[str, Any]) -> dict[str, Any]:
  """The settings a knn.json made before it kept them names at its top (jaxssl/eval/cached_probe.py:knn_layer)."""
  return {k: made[k] for k in ('k', 'temperature') if k in made}


def lowshot_made_with(made: dict[str, Any]) -> dict[str, Any]:
  """What a lowshot.json says of how it was made besides its settings: one from before they were kept was
  standardized otherwise; one from before the layer was chosen per subset fitted the all-label probe's best."""
  return {'standardized_by': None, **({'layers': f"the all-label probe's best ({made['layer']})"}
                                      if 'layer' in made else {})}


def reuse_selection(cell: ml_collections.ConfigDict, selection: ml_collections.ConfigDict, select_dir: str,
                    cell_dir: str) -> str | None:
  """The test cell on subset ``select.seed`` trains exactly what the selection cell of the chosen values trained
  (one config but the split it is scored on; the run is deterministic), so it starts from that cell's finished
  training: its checkpoints, its training rows of metrics.jsonl and init_from.json are copied into ``cell_dir``
  (``reused.json`` says from where) and the trainer, resuming at the last step, only scores the test split.
  Returns ``select_dir``, or None where the configs differ, the selection cell is not finished, or ``cell_dir``
  already holds a run (it then resumes or trains as any cell)."""
  scored_on = selection.copy_and_resolve_references()
  with scored_on.unlocked():
    scored_on.data.eval_split = cell.data.eval_split
  if scored_on.to_dict() != cell.to_dict():
    return None
  done = read_json(os.path.join(select_dir, 'final_metrics.json'))
  source = os.path.join(select_dir, 'checkpoints')
  if done is None or not os.path.isdir(source) or os.path.exists(os.path.join(cell_dir, 'checkpoints')):
    return None
  os.makedirs(cell_dir, exist_ok=True)
  for stale in os.listdir(cell_dir):   # a copy a stopped call left half done
    if stale.startswith('checkpoints.partial.'):
      shutil.rmtree(os.path.join(cell_dir, stale), ignore_errors=True)
  if os.path.exists(os.path.join(select_dir, 'init_from.json')):
    shutil.copy2(os.path.join(select_dir, 'init_from.json'), os.path.join(cell_dir, 'init_from.json'))
  with open(os.path.join(select_dir, 'metrics.jsonl'), encoding='utf-8') as f:
    rows = [line for line in f if json.loads(line).get('split') == 'train']
  write_text(os.path.join(cell_dir, 'metrics.jsonl'), ''.join(rows))
  partial = os.path.join(cell_dir, f'checkpoints.partial.{os.getpid()}')
  shutil.rmtree(partial, ignore_errors=True)
  shutil.copytree(source, partial)
  os.replace(partial, os.path.join(cell_dir, 'checkpoints'))   # whole or absent: a stop mid-copy leaves no half
  # Last: a cell stopped before this point trains as any cell on the next call (and says nothing of reuse).
  write_json(os.path.join(cell_dir, 'reused.json'),
             {'trained_by': select_dir, 'step': int(done['step']),
              'why': 'the same config but the split it is scored on: the same training, scored on the test split'})
  return select_dir
