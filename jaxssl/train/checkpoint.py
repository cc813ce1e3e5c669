"""orbax checkpoints of everything a resumed run needs to continue exactly: the train state and the grain
iterator's position (the run's key is ``PRNGKey(config.seed)``, and a resume cannot change the seed: the data
position saved beside the state records it). Checkpoints of earlier versions also hold an ``rng`` item; it is
not read. Saves are asynchronous; orbax commits a step by renaming a finished temporary directory (on gs://, by
writing its commit_success.txt last), so a run killed mid-save (even with kill -9) leaves the previous checkpoint
intact.

Restoring never trusts a checkpoint blindly. The saved arrays' shapes are compared with the model the config
builds before anything is read (another model's checkpoint is one line naming the differing config keys, not an
orbax traceback); a step that cannot be read (a truncated file) is skipped for the newest older one that can,
with a warning naming it, and is never deleted; the data iterator's position is checked against the dataset it
was saved with. A disk's refusal to take a save is one line (:class:`jaxssl.runlog.WriteError`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import sys
import time
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxssl import files, trees
from jaxssl.runlog import WriteError, log, write_error, writing


class _ReadOnlyNotices(logging.Filter):
  """Drops orbax's warnings that a read-only manager is read-only (it says so twice per restore in --mode=eval,
  knn and predict, which open the checkpoints read-only on purpose). Other warnings pass."""
  NOTICES = ('CheckpointManagerOptions.read_only=True', 'Given directory is read only')

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno == logging.WARNING and str(record.msg).startswith(self.NOTICES))


logging.getLogger('absl').addFilter(_ReadOnlyNotices())  # orbax logs through absl's logger


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used (none readable, another config's, an edited data position): one line
  naming it and what to do."""


class StateMismatchError(CheckpointError):
  """The checkpoint's arrays do not fit the model this config builds."""

  def __init__(self, message: str, path: str, detail: str):
    super().__init__(message)
    self.path, self.detail = path, detail


def _abstract(tree, sharding):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _shapes(tree) -> dict[tuple[str, ...], str]:
  return {k: f'{tuple(int(d) for d in v.shape)} {v.dtype}' for k, v in trees.flat_paths(tree).items()}


def _first_line(exc: BaseException, limit: int = 200) -> str:
  """The root cause of a failed read in a few words (orbax wraps tensorstore's error in a page of its spec)."""
  while exc.__cause__ is not None:
    exc = exc.__cause__
  text = (str(exc).strip().splitlines() or [''])[0].split(' See full TensorStore details')[0]
  return f'{type(exc).__name__}: {text[:limit]}{"..." if len(text) > limit else ""}'


def _unraisable_filter(previous):
  def unraisable(info):
    code = getattr(info.object, 'cr_code', None)
    if code is None or f'{os.sep}orbax{os.sep}' not in code.co_filename:
      previous(info)
  return unraisable


_SILENCED = []  # set once a save failed: see _silence_failed_save


def _silence_failed_save() -> None:
  """For the rest of the process, once a save failed (the run ends with that one line): the failed save's other
  writes end whenever they end, even after the line is printed, and each would report the same failure again (a
  page through asyncio's log as its task is freed, the unraisable hook for its coroutine)."""
  if not _SILENCED:
    _SILENCED.append(True)
    logging.getLogger('asyncio').setLevel(logging.CRITICAL)
    sys.unraisablehook = _unraisable_filter(sys.unraisablehook)


@contextlib.contextmanager
def _quiet_orbax_failures():
  """While a restore is tried, or a failed save is closed: orbax leaves the other reads or writes of that step
  running, and as each ends it reports the same failure again, a page of tensorstore's spec each (through
  asyncio's log and the unraisable hook). The run's warning or error line names the failure once: those reports
  are dropped, and the stragglers are let end and freed inside this block (:func:`_settle`), before that line."""
  previous = sys.unraisablehook
  asyncio_log = logging.getLogger('asyncio')
  level = asyncio_log.level
  sys.unraisablehook = _unraisable_filter(previous)
  asyncio_log.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    if not _SILENCED:  # else the failure's stragglers stay quiet for good
      sys.unraisablehook = previous
      asyncio_log.setLevel(level)


def _everywhere(ok: bool) -> bool:
  """Whether every process says ``ok``: a step one process cannot read (a transient store error) is skipped by all,
  or they would restore different steps (or wait for each other in different collectives)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel  # multi-process only
  return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


def _settle() -> None:
  time.sleep(0.5)
  gc.collect()


def _mismatch(saved: dict[tuple[str, ...], str], live: dict[tuple[str, ...], str]) -> str:
  """'' if the trees agree, else the first difference in words."""
  differ = [k for k in saved if k in live and saved[k] != live[k]]
  if differ:
    more = f' (and {len(differ) - 1} more arrays)' if len(differ) > 1 else ''
    return f"{'/'.join(differ[0])} is {saved[differ[0]]} there, {live[differ[0]]} here{more}"
  only_saved, only_live = sorted(set(saved) - set(live)), sorted(set(live) - set(saved))
  if only_saved or only_live:
    first = (f"{'/'.join(only_saved[0])} only there" if only_saved else f"{'/'.join(only_live[0])} only here")
    return f'{len(saved)} arrays there, {len(live)} here ({first})'
  return ''


def _collect_failed_reads() -> None:
  """orbax leaves the other reads of a restore that failed as coroutines and callbacks of a closed event loop,
  which Python reports when it collects them ("Exception ignored in: <coroutine _read_array_index_and_device_put>",
  "Event loop is closed", pages of tensorstore detail on stderr) at some later moment. Collected now, their reports
  dropped: the warning line of the unreadable step says what failed."""
  hook = sys.unraisablehook
  sys.unraisablehook = lambda _: None
  try:
    gc.collect()
  finally:
    sys.unraisablehook = hook


class Checkpointer:
  """A thin layer over ``ocp.CheckpointManager`` that names the items jaxssl saves."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True, read_only: bool = False):
    self.directory = files.abspath(directory)  # a gs:// URL as it is: orbax takes it
    self._failed = False
    with writing(self.directory):
      self.manager = ocp.CheckpointManager(
          self.directory,
          options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                               create=not read_only, read_only=read_only))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def _save_error(self, exc: BaseException) -> WriteError | None:
    """An async save's failure (it surfaces at the next save or wait) as one line, if a disk refused it."""
    err = write_error(exc, self.directory)
    if err is None:
      return None
    self._failed = True
    _silence_failed_save()
    step = re.search(r'/(\d+)\.orbax-checkpoint-tmp', str(exc))
    cause = str(err).split(': ', 1)[1] if str(err).startswith(self.directory + ': ') else str(err)
    return WriteError(f'{self.directory}: the checkpoint{f" of step {step.group(1)}" if step else ""} could not be '
                      f'saved: {cause}')

  def save(self, step: int, state, data_iter=None, meta: dict[str, Any] | None = None, *,
           force: bool = False) -> None:
    """Starts saving ``step`` in the background. A previous save that failed for want of disk raises here, as one
    line: orbax reports a background save's failure at the next save (or wait, or close)."""
    items = {'state': ocp.args.StandardSave(state), 'meta': ocp.args.JsonSave(meta or {})}
    if data_iter is not None:
      items['data_iter'] = grain.checkpoint.CheckpointSave(data_iter)
    try:
      self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:  # pylint: disable=broad-exception-caught  # orbax re-raises its threads' errors as is
      err = self._save_error(e)
      if err is None:
        raise
      raise err from None  # the line says it all; orbax's chain would hold its failed tasks alive

  # ---- restoring

  def saved_shapes(self, step: int) -> dict[tuple[str, ...], str]:
    """'shape dtype' of every array of ``step``'s train state, by path, from its metadata (no array is read)."""
    return _shapes(state_metadata(files.join(self.directory, str(step), 'state')))

  def restore(self, step: int | None, state_like, sharding, data_iter=None, *, set_aside: bool = False):
    """Restores ``step`` (None: the newest readable one) onto ``sharding``; ``state_like`` gives the tree.

    Returns (state, meta); the data iterator, if given, is restored in place. With ``step`` None, a step
    that cannot be read is skipped for the next older one, with a warning; ``set_aside`` (a training run, which
    will save those steps again) renames it to ``<step>.corrupt-<time>`` beside the others, never deleting it.
    A checkpoint of another model raises :class:`StateMismatchError` at once: older steps are of the same run.
    """
    steps = self.all_steps()
    if step is not None and step not in steps or not steps:
      raise FileNotFoundError(f'no checkpoint {"" if step is None else f"at step {step} "}in {self.directory}; '
                              f'available steps: {steps or "none"}')
    live = _shapes(state_like)
    unreadable = []
    for candidate in ([step] if step is not None else sorted(steps, reverse=True)):
      path = files.join(self.directory, str(candidate))
      saved, why = None, ''
      try:
        saved = self.saved_shapes(candidate)
      except Exception as e:  # pylint: disable=broad-exception-caught  # orbax/tensorstore raise bare Exceptions
        why = _first_line(e)
      if not _everywhere(saved is not None):  # every process must settle on the same step
        unreadable.append((candidate, why or 'another process could not read it'))
        continue
      detail = _mismatch(saved, live)
      if detail:
        raise StateMismatchError(f'the checkpoint {path} does not fit the model of this config ({detail}); use '
                                 'the config it was trained with, or another --workdir', path, detail)
      with _quiet_orbax_failures():
        restored, why = self._try_restore(candidate, _abstract(state_like, sharding), data_iter)
        if restored is None:
          _settle()
      if not _everywhere(restored is not None):
        unreadable.append((candidate, why or 'another process could not read it'))
        continue
      if unreadable:
        self._skipped(unreadable, candidate, set_aside)
      return restored['state'], restored['meta']
    tried = '; '.join(f'step {s}: {why}' for s, why in unreadable)
    if step is not None:
      raise CheckpointError(f'the checkpoint {files.join(self.directory, str(step))} cannot be read ({tried}); '
                            f'choose another step (available: {steps}); it is left as it is')
    raise CheckpointError(f'no checkpoint in {self.directory} can be read ({tried}); they are left as they are: '
                          'move that folder aside to start this run afresh, or use another --workdir')

  def _try_restore(self, step: int, abstract_state, data_iter) -> tuple[dict[str, Any] | None, str]:
    """(the restored items, '') or (None, why ``step`` cannot be read): only words are kept of the failure.
    Every array is read straight onto the sharding ``abstract_state`` names, whatever mesh or process count saved
    it."""
    items = {'state': ocp.args.StandardRestore(abstract_state), 'meta': ocp.args.JsonRestore()}
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
      if data_iter is not None:
        self._restore_iterator(step, data_iter)
      return restored, ''
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-exception-caught  # a truncated file: a bare Exception
      _collect_failed_reads()
      return None, _first_line(e)

  def _restore_iterator(self, step: int, data_iter) -> None:
    """Sets ``data_iter`` to ``step``'s position. A file that does not parse is an unreadable checkpoint (the
    caller tries an older one); a position that parses but cannot be set was edited: a CheckpointError. So is a
    checkpoint of another number of processes (each saved its own position), which is not unreadable either."""
    folder = files.join(self.directory, str(step), 'data_iter')
    saved = sorted(n for n in files.listdir(folder) if n.startswith('process_')) if files.isdir(folder) else []
    if saved and f'process_{jax.process_index()}-of-{jax.process_count()}.json' not in saved:
      count = saved[0].rsplit('-of-', 1)[-1].split('.')[0]
      raise CheckpointError(f'the checkpoint {files.join(self.directory, str(step))} was saved by a run of {count} '
                            f'process(es), this one has {jax.process_count()}: resume it with {count} (the same '
                            'launch), or start a new --workdir from its weights with --config.init_from')
    try:
      self.manager.restore(step, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
    except (LookupError, TypeError, AttributeError) as e:  # grain's set_state on a wrong position
      raise CheckpointError(f'the checkpoint {files.join(self.directory, str(step))} holds a data iterator '
                            f'position that does not fit this dataset ({_first_line(e)}); it was edited or is of '
                            'another pipeline: resume from another step (move this one aside) or use another '
                            '--workdir') from e

  def _skipped(self, unreadable: list[tuple[int, str]], used: int, set_aside: bool) -> None:
    """Warns of the unreadable steps newer than ``used`` and, for a run that will save again, moves them aside
    (orbax would otherwise keep them as the latest steps, or refuse to save those steps anew)."""
    stamp = time.strftime('%Y%m%d-%H%M%S')
    for bad, why in unreadable:
      path = files.join(self.directory, str(bad))
      where = 'left as it is'
      if set_aside:
        where = f'moved aside to {path}.corrupt-{stamp}'
        if jax.process_index() == 0:
          with writing(path):
            files.rename(path, f'{path}.corrupt-{stamp}')
      log(f'warning: the checkpoint {path} cannot be read ({why}); using step {used} instead. '
          f'The unreadable one is {where}')
    if set_aside:
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
        multihost_utils.sync_global_devices('jaxssl: unreadable checkpoints set aside')
      self.manager.reload()

  # ---- finishing

  def wait(self) -> None:
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-exception-caught  # see save
      err = self._save_error(e)
      if err is None:
        raise
      raise err from None  # the line says it all; orbax's chain would hold its failed tasks alive

  def close(self) -> None:
    """Waits for the last save and closes; after a save failed (already raised), closing says nothing more."""
    with _quiet_orbax_failures():
      try:
        self.manager.close()
      except Exception as e:  # pylint: disable=broad-exception-caught  # see save
        if not self._failed:
          err = self._save_error(e)
          if err is None:
            raise
          raise err from None  # the line says it all; orbax's chain would hold its failed tasks alive
      finally:
        if self._failed:
          _settle()


def state_metadata(state_dir: str):
  """The tree of array metadata (shapes, dtypes) a saved train state holds, read without reading an array."""
  # The item's handler, not a Checkpointer: that would also look for a step's metadata file in the item's folder
  # and warn that there is none.
  reader = ocp.StandardCheckpointHandler()
  try:
    meta = reader.metadata(files.path(state_dir))
  finally:
    reader.close()  # it holds an async writer's threads
  return getattr(meta, 'tree', meta)


# ---- what a checkpoint must agree with besides its arrays


def data_fingerprint(data_cfg, num_records: int, *, seed: int, batch_size: int) -> dict[str, Any]:
  """What the data iterator's position is a position in: the same numbers name the same batches (the records
  taken, after ``train_limit`` and the labelled subset; the shuffle seed; the batches each process cuts)."""
  return {'dataset': data_cfg.name, 'split': data_cfg.train_split, 'records': int(num_records),
          'train_fraction': float(data_cfg.train_fraction), 'subset_seed': int(data_cfg.subset_seed),
          'seed': int(seed), 'batch_size': int(batch_size), 'processes': jax.process_count(),
          # No num_workers: the saved position is a batch count whatever the workers (pipeline.PortableIterator), so
          # a run resumes where data.num_workers='auto' (-1) chooses another count; older checkpoints' is ignored.
          # Only where it is not the default, so that runs saved before k-fold subsets existed still resume.
          **({'subset_mode': data_cfg.subset_mode} if data_cfg.get('subset_mode', 'random') != 'random' else {}),
          **({'holdout': [float(data_cfg.holdout_fraction), int(data_cfg.get('holdout_seed', 0))]}
             if data_cfg.get('holdout_fraction', 0.0) > 0 else {}),
          'content': {k: data_cfg[k] for k in CONTENT_KEYS if k in data_cfg}}


# Data settings that change what the records look like without changing their number: a resume with another
# value would continue on other pixels. (Not source_dir: the same files may live at another path on another
# machine; another image folder of the same size is the one change this cannot see.)
CONTENT_KEYS = ('normalize', 'image_size', 'resize', 'channels', 'pad_to', 'crop_bbox', 'image_format',
                'val_fraction', 'test_fraction', 'image_key', 'label_key')


def check_data_position(path: str, meta: dict[str, Any], fingerprint: dict[str, Any], iter_state: Any,
                        step: int) -> None:
  """Raises CheckpointError unless the restored iterator is a position in this run's data at ``step``: the same
  dataset (its fingerprint, saved beside it) and one batch per step taken."""
  saved = meta.get('data') if isinstance(meta, dict) else None
  if isinstance(saved, dict):
    saved = {k: v for k, v in saved.items() if k != 'num_workers'}   # speed only (see data_fingerprint)
    if 'content' not in saved:   # saved before CONTENT_KEYS were recorded: those checks cannot be made
      fingerprint = {k: v for k, v in fingerprint.items() if k != 'content'}
  if saved is not None and saved != fingerprint:
    def flat(fp):   # content's keys by their config names
      return {**{k: v for k, v in fp.items() if k != 'content'},
              **{f'data.{k}': v for k, v in (fp.get('content') or {}).items()}}
    saved_flat, here = flat(saved), flat(fingerprint)
    keys = ', '.join(f'{k} {saved_flat.get(k)!r} there, {here.get(k)!r} here'
                     for k in sorted(set(saved_flat) | set(here)) if saved_flat.get(k) != here.get(k))
    raise CheckpointError(f'the checkpoint {path} holds a data position in another dataset ({keys}); resume with '
                          'the data settings it was saved with, or use another --workdir')
  state = iter_state
  if isinstance(state, (bytes, str)):
    try:
      state = json.loads(state)
    except ValueError:
      return
  if isinstance(state, dict) and 'next_index' in state:
    index = state['next_index']
    if not isinstance(index, int) or isinstance(index, bool) or index != step:
      raise CheckpointError(f'the checkpoint {path} has its data iterator at batch {index!r}, but its train state '
                            f'at step {step}: they are saved together, one batch per step, so the checkpoint was '
                            'edited or mixed from two; resume from another step (move this one aside) or use '
                            'another --workdir')


def _flat_config(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat_config(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: tree}


def recorded_config(workdir: str) -> tuple[str, dict[str, Any]] | None:
  """(path, config) the workdir's run last recorded: its latest ``config.step<N>.json`` (a resume with another
  config), else ``config.json``; None if it has neither or they cannot be read."""
  recorded = {}
  for name in files.listdir(workdir) if files.isdir(workdir) else ():
    if m := re.fullmatch(r'config\.step(\d+)\.json', name):
      recorded[int(m.group(1))] = name
  names = [recorded[max(recorded)]] if recorded else []
  for name in names + ['config.json']:
    path = files.join(workdir, name)
    try:
      return path, json.loads(files.read_text(path))
    except (OSError, ValueError):
      continue
  return None


def config_mismatch(err: StateMismatchError, workdir: str, config) -> StateMismatchError:
  """``err`` in the words of the run: which config keys differ from the workdir's, and the two ways out."""
  recorded = recorded_config(workdir)
  if recorded is None:
    return err
  path, old = recorded
  new = _flat_config(json.loads(config.to_json_best_effort()))
  old = _flat_config(old)
  keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and k != 'mode']
  shown = ', '.join(f'{k} ({old.get(k, "unset")!r} there, {new.get(k, "unset")!r} here)' for k in keys[:6])
  more = f' and {len(keys) - 6} more' if len(keys) > 6 else ''
  return StateMismatchError(
      f'{workdir} holds a run of another config: {shown or "no key differs"}{more} (against {path}); its '
      f'checkpoint does not fit this model ({err.detail}). Use another --workdir for this config, or rerun with '
      f'the config file and overrides that wrote {path} (it lists every key the run had)', err.path, err.detail)
