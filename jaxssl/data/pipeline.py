"""grain pipelines: record indices -> shuffle -> global batches -> this process's rows, read -> task transforms.

Transforms run on whole batches (one vectorized numpy call per batch, not a Python loop per image): on this
2-core CPU that is several times faster than per-record maps. ``random_map`` hands every batch a generator
seeded from (seed, batch position), so a batch's content depends only on the seed and its position: the
iterator state (a position) is all a checkpoint needs, and workers produce what one process would.

Several processes share every global batch rather than each taking a slice of the records: each reads its own
devices' rows of it (jaxssl/sharding.py) and transforms them with the random draws the whole batch would get
(:class:`RowGenerator`), so a run's batches are the same on any number of devices and processes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import grain
import numpy as np

from jaxssl import sharding
from jaxssl.data import decoded, jpeg
from jaxssl.data.sources import read_records
from jaxssl.runlog import log
from jaxssl.sharding import BatchLayout

Batch = dict[str, Any]


class BatchTransform(Protocol):
  """What the pipeline needs of a task (jaxssl/tasks): its name and its batch transform."""
  name: str

  def transform(self, batch: Batch, rng: np.random.Generator, *, train: bool) -> Batch:
    ...


def stack_records(records: Sequence[dict[str, Any]]) -> Batch:
  """Raw records -> one batch; every example gets weight 1 (padding rows get 0 later).

  Every numeric field travels ('label'; 'index', the record's position in its split, for kNN and predictions;
  DeepFashion's 'category', 'attributes', 'has_attributes', 'image_hw'); text fields (file paths) stay behind,
  since batches go to devices.
  """
  batch = {'image': np.stack([np.asarray(r['image']) for r in records])}
  for key, value in records[0].items():
    if key in ('label', 'index'):
      batch[key] = np.asarray([r[key] for r in records], np.int64)
    elif key not in ('image', 'weight') and np.asarray(value).dtype.kind in 'biuf':
      batch[key] = np.stack([np.asarray(r[key]) for r in records])
  batch['weight'] = np.ones(len(records), np.float32)
  return batch


class RowGenerator:
  """What a batch transform draws on a whole global batch, cut to the rows this process holds.

  A transform draws per row: every draw's leading dimension is its batch's rows (a crop offset, a flip, a
  permutation index per image). Given this process's rows of a global batch of ``num_rows`` records, each draw is
  made for all ``num_rows`` rows from the batch's generator (the same in every process) and this process keeps its
  rows; padding rows (``rows >= num_rows``) repeat row 0's. So every row gets the values it would get if one
  process on one device transformed the whole batch: the run does not depend on the number of devices or
  processes. Drawing numbers for the whole batch costs a few microseconds; the images are only this process's.
  """

  def __init__(self, generator: np.random.Generator, rows: np.ndarray, num_rows: int):
    self._generator, self._num_rows = generator, num_rows
    self._take = np.where(rows < num_rows, rows, 0)

  def _draw(self, method: str, size, **kwargs):
    shape = (size,) if isinstance(size, (int, np.integer)) else tuple(size) if size is not None else ()
    if not shape or shape[0] != len(self._take):
      raise ValueError(f'a batch transform draws per row: the size of each draw starts with its batch size '
                       f'({len(self._take)}), not {size!r} (jaxssl/data/pipeline.py RowGenerator)')
    if any(np.ndim(v) >= len(shape) for k, v in kwargs.items() if k != 'dtype'):  # bounds per row
      raise ValueError(f'a batch transform draws per row with bounds shared by the rows: {method} got bounds with '
                       f'a row axis (they may vary along the trailing axes of size {shape[1:]}; '
                       'jaxssl/data/pipeline.py RowGenerator)')
    return getattr(self._generator, method)(size=(self._num_rows,) + shape[1:], **kwargs)[self._take]

  def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
    return self._draw('integers', size, low=low, high=high, dtype=dtype, endpoint=endpoint)

  def random(self, size=None, dtype=np.float64):
    return self._draw('random', size, dtype=dtype)

  def uniform(self, low=0.0, high=1.0, size=None):
    return self._draw('uniform', size, low=low, high=high)

  def normal(self, loc=0.0, scale=1.0, size=None):
    return self._draw('normal', size, loc=loc, scale=scale)


@dataclasses.dataclass(frozen=True)
class TaskTransforms(grain.transforms.RandomMap):
  """Applies every task's batch transform; each task draws from its own stream so adding one keeps the rest."""
  tasks: tuple[BatchTransform, ...]
  train: bool

  def random_map(self, batch: Batch, rng: np.random.Generator) -> dict[str, Batch]:
    return self.on_rows(batch, rng, None, 0)

  def on_rows(self, batch: Batch, rng: np.random.Generator, rows: np.ndarray | None,
              num_rows: int) -> dict[str, Batch]:
    """The transforms of ``batch``, this process's ``rows`` of a global batch of ``num_rows`` records (None: the
    whole batch), with the draws the whole batch would get (:class:`RowGenerator`: on one device too, so that a
    transform that breaks the per-row rule fails on the first run, not on the first multi-host one)."""
    if rows is None:
      rows, num_rows = np.arange(len(batch['weight'])), len(batch['weight'])
    seeds = rng.integers(0, 2**63 - 1, size=len(self.tasks))
    return {task.name: task.transform(batch, RowGenerator(np.random.default_rng(int(seed)), rows, num_rows),
                                      train=self.train) for task, seed in zip(self.tasks, seeds)}


@dataclasses.dataclass(frozen=True)
class _ReadAndTransform(grain.transforms.RandomMap):
  """A global batch of record indices -> this process's rows of it, read and transformed. Its repr leaves the
  source out: grain names a pipeline's stages by their str(), and an in-memory source's would print every image
  (~3 s of CPU per iterator for 600 Fashion-MNIST records)."""
  source: Any = dataclasses.field(repr=False)
  transforms: TaskTransforms
  layout: BatchLayout

  def random_map(self, element: np.ndarray, rng: np.random.Generator) -> dict[str, Batch]:
    rows = self.layout.rows()
    batch = stack_records(read_records(self.source, element[rows]))
    return self.transforms.on_rows(batch, rng, rows, len(element))


def _layout(mesh, global_batch: int, what: str) -> BatchLayout:
  return sharding.batch_layout(sharding.make_mesh() if mesh is None else mesh, global_batch, what)


def train_index_batches(num_records: int, *, global_batch: int, seed: int) -> grain.MapDataset:
  """The record indices of every global batch of :func:`train_dataset`, in order (endless, reshuffled each epoch)."""
  ds = grain.MapDataset.range(num_records).shuffle(seed=seed).repeat(None, reseed_each_epoch=True)
  return ds.batch(global_batch, drop_remainder=True, batch_fn=np.asarray)


def train_dataset(source, tasks: Sequence[BatchTransform], *, global_batch: int, seed: int, mesh=None,
                  layout: BatchLayout | None = None) -> grain.MapDataset:
  """Endless, shuffled with a new order every epoch, batched and transformed.

  The order and the batches are global (the record indices of every global batch are the same in every
  process); each process then reads and transforms only its devices' rows of each batch (``layout``, default:
  this process's share of ``mesh``, default: every device). On one device this is the plain shuffle -> batch ->
  transform of the whole batch.
  """
  # Rows only: grain's worker processes get a pickled copy, and devices do not pickle.
  layout = dataclasses.replace(layout or _layout(mesh, global_batch, 'batch_size'), devices=())
  jpeg.use_fast_decoder(source)   # the same pixels, decoded in about half the time (jaxssl/data/jpeg.py)
  ds = train_index_batches(len(source), global_batch=global_batch, seed=seed)
  return ds.random_map(_ReadAndTransform(source, TaskTransforms(tuple(tasks), train=True), layout), seed=seed + 1)


AUTO = -1   # data.num_workers / read_threads / prefetch_batches: chosen from the machine (input_settings)
DECODED_CACHE = ('auto', 'on', 'off')   # data.decoded_cache (jaxssl/data/decoded.py)
MAX_AUTO_WORKERS = 16


def machine_cores() -> int:
  """The cores this process may run on (its affinity mask: a container's or taskset's share, not the host's)."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):  # not Linux
    return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class InputSettings:
  """The iterator's worker, thread and prefetch settings, resolved, and what chose them."""
  num_workers: int
  read_threads: int
  prefetch_batches: int
  cores: int
  backend: str
  auto: tuple[str, ...]   # the keys that were 'auto' (-1)
  decoded_cache: bool = False   # data.decoded_cache resolved (jaxssl/data/decoded.py)

  def options(self) -> dict[str, Any]:
    """Keyword arguments of :func:`train_iterator`."""
    return {'num_workers': self.num_workers, 'read_threads': self.read_threads,
            'prefetch_batches': self.prefetch_batches, 'decoded_cache': self.decoded_cache}

  def line(self) -> str:
    """The run's log line, e.g. ``input: 14 workers x 2 threads, prefetch 2 (auto: 16 cores, gpu)``."""
    threads = f'{self.read_threads} thread{"s" if self.read_threads != 1 else ""}'
    how = (f'auto: {self.cores} cores, {self.backend}' if len(self.auto) == 3 else
           f'auto {", ".join(self.auto)}: {self.cores} cores, {self.backend}' if self.auto else 'as set')
    cache = ', decoded-image cache' if self.decoded_cache else ''
    return f'input: {self.num_workers} workers x {threads}, prefetch {self.prefetch_batches}{cache} ({how})'


def auto_settings(cores: int, backend: str) -> tuple[int, int, int]:
  """(num_workers, read_threads, prefetch_batches) for a host of ``cores`` cores whose step runs on ``backend``.

  On a CPU the step itself is the work: XLA's and oneDNN's threads use every core, and the pipeline makes 5-40x
  what the step consumes from one thread in the training process (``python -m jaxssl.bench``), so the input
  gets no worker process, one thread and 4 batches ahead; any more took cycles from the step (grain's defaults,
  16 threads and 500 batches ahead, made CifarNet's gradient 2x slower on 2 cores). With an accelerator the
  host's cores are idle but for the input, and it needs them: on paper an H100 step of DeepFashion's AlexNet
  consumes 17-34k images/s, what 12-24 cores of this pipeline make (the bench's ``gpu_on_paper``). So the input
  takes every core but two (one for the training loop, which dispatches steps and copies batches to the device,
  one for grain's main-process threads, checkpoints and the OS), as worker processes, at most 16 (each holds a
  copy of the dataset's buffers, about 240 MB, and the main process unpickles every batch, which bounds what
  more workers add); 2 threads each, so a worker decodes one batch while its other thread waits on the disk; 2
  batches ahead per worker (grain keeps one more per worker in shared memory: 3 x workers batches ahead, >= 9
  from 3 workers). An accelerator host of 2 cores or fewer keeps the input in the training process with 2
  threads and 8 batches ahead. Several training processes on one host (one per GPU) each take this share:
  set ``data.num_workers`` to the cores / processes - 2 there.
  """
  if backend == 'cpu':
    return 0, 1, 4
  workers = max(0, min(cores - 2, MAX_AUTO_WORKERS))
  return (workers, 2, 2) if workers else (0, 2, 8)


def input_settings(data_cfg, *, cores: int | None = None, backend: str | None = None,
                   processes: int | None = None) -> InputSettings:
  """``config.data``'s num_workers, read_threads and prefetch_batches, each -1 ('auto', the default) or absent
  resolved by :func:`auto_settings` for this machine (``cores``: default :func:`machine_cores`; ``backend``:
  default ``jax.default_backend()``; ``processes``: default ``jax.process_count()``); explicit values are kept."""
  keys = ('num_workers', 'read_threads', 'prefetch_batches')
  given = {k: int(data_cfg.get(k, AUTO)) for k in keys}
  cores = machine_cores() if cores is None else int(cores)
  if backend is None or processes is None:
    import jax  # pylint: disable=import-outside-toplevel  # the pipeline's workers need no jax
    backend = jax.default_backend() if backend is None else backend
    processes = jax.process_count() if processes is None else processes
  auto = dict(zip(keys, auto_settings(cores, backend)))
  cache = str(data_cfg.get('decoded_cache', 'auto'))
  if cache not in DECODED_CACHE:
    raise ValueError(f"data.decoded_cache must be one of {', '.join(DECODED_CACHE)}, not {cache!r}")
  return InputSettings(**{k: auto[k] if v == AUTO else v for k, v in given.items()}, cores=cores, backend=backend,
                       auto=tuple(k for k in keys if given[k] == AUTO),
                       # auto: one process beside an accelerator (the processes of a multi-host run may share a
                       # network folder, where memory maps are not coherent between hosts: 'on' where it is local)
                       decoded_cache=cache == 'on' or (cache == 'auto' and backend != 'cpu' and processes == 1))


def iterator_options(data_cfg) -> dict[str, int]:
  """The iterator's worker, thread and prefetch settings from ``config.data``, 'auto' (-1) or absent resolved for
  this machine (:func:`input_settings`)."""
  return input_settings(data_cfg).options()


def position_of(state: dict[str, Any]) -> int:
  """The number of batches an iterator state has taken, whatever the number of worker processes that saved it.

  grain's state of a single-process iterator is ``{'next_index': n}``; with k workers (grain 0.2.18's
  ``mp_prefetch``) worker i makes batches i, i + k, ... and the state holds each worker's own ``next_index``, taken
  round-robin: their sum is the position. A batch's content depends only on its position (``random_map`` seeds
  by position), so a position is all that resuming needs, with any number of workers.
  """
  def count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise TypeError(f'not a grain iterator position: {str(state)[:200]}')
    return value

  if 'next_index' in state:
    return count(state['next_index'])
  return sum(count(s['next_index']) for s in state['iterators_in_use_states'] if s is not None)


def state_at(position: int, num_workers: int) -> dict[str, Any]:
  """grain's iterator state at ``position`` (batches taken) for an iterator of ``num_workers`` worker processes
  (the inverse of :func:`position_of`)."""
  if num_workers <= 0:
    return {'next_index': int(position)}
  return {'next_index_in_cycle': position % num_workers, 'next_index_in_datasets': num_workers,
          'iterators_in_use_indices': list(range(num_workers)),
          'iterators_in_use_states': [{'next_index': max(0, -(-(position - i) // num_workers))}
                                      for i in range(num_workers)],
          'exhausted': [0] * num_workers, 'future_states': {}}


class PortableIterator(grain.DatasetIterator):
  """A train iterator whose saved state is its position alone (``{'next_index': batches taken}``), so that a
  checkpoint resumes with any number of worker processes: data.num_workers 'auto' resolves to another value on
  another machine, and a run moved from a 2-core CPU to a 16-core GPU host continues with the same batches.
  States saved by grain's own worker iterator (jaxssl before this class) are read too."""

  def __init__(self, parent: grain.DatasetIterator, num_workers: int):
    super().__init__(parent)
    self.num_workers = num_workers

  def __next__(self):
    return next(self._parent)

  def get_state(self) -> dict[str, Any]:
    return {'next_index': position_of(self._parent.get_state())}

  def set_state(self, state: dict[str, Any]) -> None:
    position = position_of(state)
    if position < 0:
      raise IndexError(f'data iterator position {position} is out of range')
    self._parent.set_state(state_at(position, self.num_workers))

  def _get_next_index(self) -> int:
    return self.get_state()['next_index']

  def _set_next_index(self, index: int) -> None:
    self.set_state({'next_index': index})


PARENT_POLL_S = 0.5   # how often a grain worker checks that the training process still exists


def _exit_with_parent(parent_pid: int, worker_index: int, worker_count: int) -> None:
  """grain's ``worker_init_fn``: the worker ends itself once ``parent_pid`` (the training process) is gone.

  grain closes its workers when the iterator is closed, but a parent killed with SIGKILL closes nothing, and each
  worker (a copy of the dataset and its buffers, about 240 MB) lived on as an orphan. A daemon thread polls
  ``os.getppid()``: an orphan is re-parented (to init or a subreaper), so a different parent means the training
  process died. Not PR_SET_PDEATHSIG: that fires when the *thread* that started the worker exits, and grain
  starts workers from its own read threads, which may end before the training process does. The parent's pid is
  passed in rather than read in the worker, so a parent that died before the worker got here is noticed too.
  """
  del worker_index, worker_count

  def watch():
    while os.getppid() == parent_pid:
      time.sleep(PARENT_POLL_S)
    os._exit(1)  # pylint: disable=protected-access  # nothing to flush: the batches were for the dead parent

  threading.Thread(target=watch, name='jaxssl-exit-with-parent', daemon=True).start()


def train_iterator(source, tasks, *, global_batch: int, seed: int, num_workers: int = 0, read_threads: int = 1,
                   prefetch_batches: int = 4, decoded_cache: bool = False, mesh=None,
                   layout: BatchLayout | None = None) -> PortableIterator:
  """A checkpointable iterator (``get_state``/``set_state``: its position, :class:`PortableIterator`) over
  :func:`train_dataset`.

  ``read_threads`` / ``prefetch_batches`` bound the background work. grain's defaults (16 threads, 500
  elements ahead) are for records of a few KiB read from remote disks; here an element is a whole transformed
  batch, and those defaults kept both cores of a small CPU busy preparing 500 batches ahead: CifarNet's
  gradient took 1.17 s instead of 0.60 s while they ran. The step consumes far fewer images per second than
  one thread prepares (``python -m jaxssl.bench`` prints the ratio), so a few batches ahead suffice.
  ``decoded_cache``: the images are read through jaxssl/data/decoded.py's cache (its line is logged).
  """
  options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches)
  if decoded_cache:
    source, line = decoded.use_cache(source)
    log(line)
  it = train_dataset(source, tasks, global_batch=global_batch, seed=seed, mesh=mesh, layout=layout)
  it = it.to_iter_dataset(options)
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers),
                        worker_init_fn=functools.partial(_exit_with_parent, os.getpid()))
  return PortableIterator(iter(it), num_workers)


def num_eval_batches(num_records: int, records_per_batch: int) -> int:
  return -(-num_records // records_per_batch)


def eval_batches(source, tasks: Sequence[BatchTransform] | None, *, global_batch: int, seed: int = 0,
                 mesh=None, layout: BatchLayout | None = None) -> Iterator[dict[str, Batch]] | Iterator[Batch]:
  """One pass over ``source`` in order, every record exactly once, in full batches padded with weight 0:
  ``{task name: task batch}``, or the raw batches where ``tasks`` is None.

  Global batch ``i`` holds records ``[i * global_batch, (i + 1) * global_batch)``, whatever the mesh: where the
  devices do not divide ``global_batch``, each batch gets padding rows up to the next multiple (a config runs on
  any device count, with the same figures). Each process reads its devices' rows; every process yields the same
  number of batches (collectives would hang otherwise), some of them all padding. ``layout`` (default: this
  process's share of ``mesh``, default: every device) must be of a global batch of that multiple.
  """
  if layout is None:
    mesh = sharding.make_mesh() if mesh is None else mesh
    layout = _layout(mesh, sharding.round_up(global_batch, mesh.size), 'eval_batch_size')
  rows = layout.rows()
  jpeg.use_fast_decoder(source)
  transform = None if tasks is None else TaskTransforms(tuple(tasks), train=False)
  for i in range(num_eval_batches(len(source), global_batch)):
    index = i * global_batch + rows
    valid = (rows < global_batch) & (index < len(source))
    # Padding rows repeat the batch's first record, with weight 0: the same rows whichever process holds them.
    batch = stack_records(read_records(source, np.where(valid, index, i * global_batch)))
    batch['weight'][~valid] = 0.0
    rng = np.random.default_rng([seed, i])
    # Draws for global_batch rows, as one device makes them (the last batch's padding rows included).
    yield batch if transform is None else transform.on_rows(batch, rng, rows, global_batch)
