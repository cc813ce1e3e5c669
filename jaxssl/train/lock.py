"""One training run per workdir: ``<workdir>/lock.json`` names the run that holds it (host, pid, start time).

Two runs on one workdir would resume from each other's half-written checkpoints and interleave their metrics, so
the second one stops with a line naming the holder. The lock is created whole and atomically (written beside,
then hard-linked into place, which fails if one exists), refreshed by a heartbeat thread while the run lives, and
removed on every way out but ``kill -9`` or a lost host. Such a stale lock is taken over: on the same host
when its process is gone (the pid is checked with the process's start time, so a reused pid does not count);
from another host (or another pid namespace, where the pid cannot be checked) when its heartbeat is older
than ``config.lock_timeout_s``. A takeover happens under a second, short-lived lock, so two runs that find the
same stale lock do not both take it. In a multi-process run process 0 holds the lock for all and tells the
others whether it got it.

The ``--mode=eval|knn|predict`` runners take no lock: they only read committed checkpoints (orbax renames a
step into place when it is complete), so they may run beside the training run they evaluate.

On GCS (``gs://`` workdirs) creation stays exclusive: the lock and the takeover guard are uploaded with the
precondition that no generation of the object exists (``ifGenerationMatch=0``), which GCS decides alone, so of two
runs starting together exactly one gets the lock. What is weaker there: the heartbeat rewrites the lock after
reading that it is still ours (a read, then a write: a takeover landing between the two is overwritten, and the run
that took over finds its lock lost at its next save and stops, as a frozen run does); and heartbeat ages are the
store's clock against this host's (a host clock minutes off shortens or lengthens ``lock_timeout_s``).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

import jax
import numpy as np

from jaxssl import files
from jaxssl.runlog import log, writing

LOCK_FILE = 'lock.json'
_TAKEOVER_STALE_S = 60.0  # a takeover takes milliseconds: a guard this old was left by a killed process


class LockError(RuntimeError):
  """The workdir is held by another live run: the message names it and what to do."""


def _read(path: str) -> str:
  """A file of this machine (/proc) or the lock, stripped; '' if it cannot be read."""
  try:
    return files.read_text(path).strip()
  except (OSError, UnicodeDecodeError):
    return ''


def _process_start(pid: int) -> str:
  """The kernel's start time of ``pid`` (field 22 of /proc/<pid>/stat), '' where unknown: with the pid, it
  names one process even after the pid is reused."""
  stat = _read(f'/proc/{pid}/stat')
  return stat.rpartition(')')[2].split()[19] if ')' in stat else ''


def _identity() -> dict[str, Any]:
  """Who holds the lock. Same host means the same machine and pid namespace: only then can the pid be checked."""
  ns = ''
  with contextlib.suppress(OSError):
    ns = os.readlink('/proc/self/ns/pid')
  return {'host': socket.gethostname(), 'pid': os.getpid(), 'pid_namespace': ns,
          'boot_id': _read('/proc/sys/kernel/random/boot_id'), 'process_start': _process_start(os.getpid())}


def _same_host(holder: dict[str, Any], me: dict[str, Any]) -> bool:
  return all(holder.get(k) == me[k] for k in ('host', 'pid_namespace'))


def _alive(holder: dict[str, Any], me: dict[str, Any]) -> bool:
  """Whether the holder's process still runs, for a holder on this host."""
  if holder.get('boot_id') and me['boot_id'] and holder['boot_id'] != me['boot_id']:
    return False  # the machine rebooted since
  pid = holder.get('pid')
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process: it exists
    pass
  start = holder.get('process_start')
  return not (start and me['process_start'] and _process_start(pid) not in ('', start))


def _describe(holder: dict[str, Any], age_s: float) -> str:
  if not holder:
    return 'an unreadable lock'
  return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {holder.get('started', '?')}, "
          f'last heartbeat {age_s:.0f} s ago')


class WorkdirLock:
  """The lock of one workdir, held from :meth:`acquire` to :meth:`release` (a context manager)."""

  def __init__(self, workdir: str, timeout_s: float = 600.0, heartbeat_s: float | None = None):
    self.workdir = files.abspath(workdir)
    self.path = files.join(self.workdir, LOCK_FILE)
    self._remote = files.is_remote(self.workdir)
    self.timeout_s = float(timeout_s)
    self.heartbeat_s = heartbeat_s if heartbeat_s is not None else max(0.5, min(30.0, self.timeout_s / 4))
    self._token = None
    self._stop = threading.Event()
    self._thread = None

  # ---- taking it

  def acquire(self) -> None:
    """Takes the lock, taking over a stale one; raises LockError naming the live holder otherwise."""
    me = _identity()
    record = {**me, 'started': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
              'command': ' '.join(sys.argv), 'processes': jax.process_count(), 'token': uuid.uuid4().hex}
    with writing(self.path, self.workdir):
      for _ in range(3):  # a lost race for a stale lock means looking again
        if self._create(record):
          break
        holder, age = self._holder()
        stale = self._stale_reason(holder, age, me)
        if stale is None:
          raise LockError(f'{self.workdir} is in use by another training run ({_describe(holder, age)}; '
                          f'{self.path}): wait for it to finish or stop it, or use another --workdir. A lock '
                          f'left by a run that died is taken over automatically (same host: at once; another '
                          f'host: after --config.lock_timeout_s={self.timeout_s:g} s without a heartbeat)')
        if self._take_over(holder, record):
          if age != float('inf'):  # not merely released meanwhile
            log(f'note: took over the lock of a run that is gone ({stale}: {_describe(holder, age)})')
          break
      else:
        raise LockError(f'{self.workdir}: could not take its lock ({self.path}) from runs starting at the same '
                        'time; rerun the command')
    self._token = record['token']
    self._thread = threading.Thread(target=self._heartbeat, name='workdir-lock-heartbeat', daemon=True)
    self._thread.start()

  def _create(self, record: dict[str, Any]) -> bool:
    """Puts ``record`` in place whole if no lock is there; False if one is."""
    if self._remote:  # one upload, whole, on the condition that no object is there
      return files.create_new(self.path, json.dumps(record, indent=2).encode('utf-8'))
    tmp = f'{self.path}.{record["token"]}.tmp'
    try:
      try:
        with open(tmp, 'w', encoding='utf-8') as f:
          json.dump(record, f, indent=2)
      except OSError as e:  # named as the lock, not as its temporary twin
        raise OSError(e.errno, e.strerror, self.path) from e
      try:
        os.link(tmp, self.path)  # atomic, and never replaces: whoever links first holds the lock
        return True
      except FileExistsError:
        return False
      except OSError as e:  # a file system without hard links: exclusive creation, then the content
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
          raise
        return self._create_exclusive(record)
    finally:
      with contextlib.suppress(OSError):
        os.remove(tmp)

  def _create_exclusive(self, record: dict[str, Any]) -> bool:
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      json.dump(record, f, indent=2)
    return True

  def _holder(self) -> tuple[dict[str, Any], float]:
    """(the lock's record, {} if unreadable; seconds since its last heartbeat)."""
    try:
      age = time.time() - files.mtime(self.path)
    except FileNotFoundError:
      return {}, float('inf')
    try:
      holder = json.loads(_read(self.path))
    except ValueError:
      holder = {}
    return (holder if isinstance(holder, dict) else {}), age

  def _stale_reason(self, holder: dict[str, Any], age: float, me: dict[str, Any]) -> str | None:
    """Why the lock is stale, or None while its holder may live."""
    if age == float('inf'):
      return 'released meanwhile'
    if holder and _same_host(holder, me):
      return None if _alive(holder, me) else 'its process is gone'
    if age > self.timeout_s:
      return f'no heartbeat for {age:.0f} s > --config.lock_timeout_s={self.timeout_s:g}'
    return None

  def _take_over(self, holder: dict[str, Any], record: dict[str, Any]) -> bool:
    """Replaces the stale lock by ours under a guard; False if another run changed it first."""
    guard = f'{self.path}.takeover'
    if not files.create_new(guard, record['token'].encode('ascii')):
      with contextlib.suppress(OSError):
        if time.time() - files.mtime(guard) > _TAKEOVER_STALE_S:
          files.remove(guard)  # its taker was killed mid-takeover
      time.sleep(0.2)
      return False
    try:
      if self._holder()[0] != holder:  # another run took it (or it was released) since we looked: look again
        return False
      with contextlib.suppress(FileNotFoundError):
        files.remove(self.path)
      return self._create(record)
    finally:
      with contextlib.suppress(OSError):
        files.remove(guard)

  # ---- holding and leaving it

  def _heartbeat(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      with contextlib.suppress(OSError, ValueError, AttributeError):  # unreadable now: the next beat tries again
        if not self._remote:
          os.utime(self.path)
          continue
        text = files.read_text(self.path)  # a store has no utime: the lock is uploaded again, while it is ours
        if json.loads(text).get('token') == self._token:
          files.write_text(self.path, text)

  def holds(self) -> bool:
    """Whether the lock on disk is still ours (a run that lost it, e.g. after a host freeze, must not go on)."""
    try:
      return json.loads(_read(self.path)).get('token') == self._token
    except (ValueError, AttributeError):
      return False

  def check(self) -> None:
    """Raises :class:`LockError` where the lock on disk is no longer ours: another run took it over while this one
    was frozen for longer than the timeout, and this run must not write into the workdir any more."""
    if self._token is not None and not self.holds():
      raise LockError(f'{self.workdir}: this run lost its lock ({self.path}) to another run while it was stalled; it '
                      'stops without saving so as not to mix two runs. Rerun when the other has finished, or use '
                      'another --workdir')

  def release(self) -> None:
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = None
    if self._token is not None and self.holds():
      with contextlib.suppress(OSError):
        files.remove(self.path)
    self._token = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()


@contextlib.contextmanager
def hold(workdir: str, timeout_s: float = 600.0):
  """The workdir's lock for the duration of a run. With several processes, process 0 takes it and the others
  learn the outcome from it (so all stop, or all go on); a single process never touches the collectives."""
  if jax.process_count() == 1:
    with WorkdirLock(workdir, timeout_s) as lock:
      yield lock
    return
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  lock, error = None, None
  if jax.process_index() == 0:
    lock = WorkdirLock(workdir, timeout_s)
    try:
      lock.acquire()
    except Exception as e:  # pylint: disable=broad-exception-caught  # re-raised below, after the others heard
      error = e
  ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
  if error is not None:
    raise error
  if not ok:
    raise LockError(f'{workdir} is in use by another training run (process 0 says which)')
  try:
    yield lock
  finally:
    if lock is not None:
      lock.release()
