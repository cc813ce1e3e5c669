"""grain pipelines: random-access source -> per-process shard -> shuffle -> batch -> task transforms.

Transforms run on whole batches (one vectorized numpy call per batch, not a Python loop per image): on this
2-core CPU that is several times faster than per-record maps. ``random_map`` hands every batch a generator
seeded from (seed, batch position), so a batch's content depends only on the seed and its position: the
iterator state (a position) is all a checkpoint needs, and workers produce what one process would.
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
import jax
import numpy as np

from jaxssl.data.sources import read_records

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


@dataclasses.dataclass(frozen=True)
class TaskTransforms(grain.transforms.RandomMap):
  """Applies every task's batch transform; each task draws from its own stream so adding one keeps the rest."""
  tasks: tuple[BatchTransform, ...]
  train: bool

  def random_map(self, batch: Batch, rng: np.random.Generator) -> dict[str, Batch]:
    seeds = rng.integers(0, 2**63 - 1, size=len(self.tasks))
    return {t.name: t.transform(batch, np.random.default_rng(int(s)), train=self.train)
            for t, s in zip(self.tasks, seeds)}


def process_shard(ds: grain.MapDataset) -> grain.MapDataset:
  """This process's share of the records (every process gets a disjoint, near-equal slice)."""
  return ds[jax.process_index()::jax.process_count()]


def local_batch_size(global_batch: int) -> int:
  if global_batch % jax.process_count():
    raise ValueError(f'batch_size={global_batch} must be divisible by the number of processes '
                     f'({jax.process_count()}); set --config.batch_size to a multiple of it.')
  return global_batch // jax.process_count()


def train_dataset(source, tasks: Sequence[BatchTransform], *, global_batch: int, seed: int) -> grain.MapDataset:
  """Endless, shuffled with a new order every epoch, batched and transformed."""
  ds = process_shard(grain.MapDataset.source(source))
  ds = ds.shuffle(seed=seed).repeat(None, reseed_each_epoch=True)
  ds = ds.batch(local_batch_size(global_batch), drop_remainder=True, batch_fn=stack_records)
  return ds.random_map(TaskTransforms(tuple(tasks), train=True), seed=seed + 1)


def iterator_options(data_cfg) -> dict[str, int]:
  """The iterator's worker, thread and prefetch settings from ``config.data`` (defaults where absent)."""
  return {'num_workers': data_cfg.get('num_workers', 0), 'read_threads': data_cfg.get('read_threads', 1),
          'prefetch_batches': data_cfg.get('prefetch_batches', 4)}


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
                   prefetch_batches: int = 4):
  """A checkpointable iterator (``get_state``/``set_state``) over :func:`train_dataset`.

  ``read_threads`` / ``prefetch_batches`` bound the background work. grain's defaults (16 threads, 500
  elements ahead) are for records of a few KiB read from remote disks; here an element is a whole transformed
  batch, and those defaults kept both cores of a small CPU busy preparing 500 batches ahead: CifarNet's
  gradient took 1.17 s instead of 0.60 s while they ran. The step consumes far fewer images per second than
  one thread prepares (``python -m jaxssl.bench`` prints the ratio), so a few batches ahead suffice.
  """
  options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches)
  it = train_dataset(source, tasks, global_batch=global_batch, seed=seed).to_iter_dataset(options)
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers),
                        worker_init_fn=functools.partial(_exit_with_parent, os.getpid()))
  return iter(it)


def _pad(batch: Batch, size: int) -> Batch:
  """Fills a short final batch up to ``size`` by repeating its first row with weight 0."""
  n = len(batch['weight'])
  if n == size:
    return batch
  idx = np.concatenate([np.arange(n), np.zeros(size - n, np.int64)])
  out = {k: v[idx] for k, v in batch.items()}
  out['weight'][n:] = 0.0
  return out


def num_eval_batches(num_records: int, global_batch: int) -> int:
  longest = -(-num_records // jax.process_count())
  return -(-longest // local_batch_size(global_batch))


def eval_batches(source, tasks: Sequence[BatchTransform] | None, *, global_batch: int,
                 seed: int = 0) -> Iterator[dict[str, Batch]] | Iterator[Batch]:
  """One pass over ``source`` in order, every record exactly once, in full batches padded with weight 0:
  ``{task name: task batch}``, or the raw batches where ``tasks`` is None.

  Every process yields the same number of batches (collectives would hang otherwise), so processes whose
  slice is shorter finish with all-padding batches.
  """
  local = local_batch_size(global_batch)
  indices = np.arange(jax.process_index(), len(source), jax.process_count())
  transform = None if tasks is None else TaskTransforms(tuple(tasks), train=False)
  for i in range(num_eval_batches(len(source), global_batch)):
    idx = indices[i * local:(i + 1) * local]
    batch = _pad(stack_records(read_records(source, idx if len(idx) else [0])), local)
    if len(idx) == 0:
      batch['weight'][:] = 0.0
    yield batch if transform is None else transform.random_map(batch, np.random.default_rng([seed, i]))
