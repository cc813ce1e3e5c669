"""Where a run's files live: one path layer for local disks and Google Cloud Storage (``gs://bucket/run``).

Everything jaxssl writes into or reads from a workdir goes through here, so that ``--workdir gs://bucket/run`` is a
bucket and not a local folder named ``gs:`` (``os.path`` and ``open`` take a URL for a relative path). Paths stay
strings everywhere else; :func:`path` gives the ``etils.epath.Path`` that orbax also takes.

Local paths keep the exact behaviour of ``os`` (its errors, with their errno and file name, are what
:func:`jaxssl.runlog.write_error` turns into one line), and a file is replaced whole: written beside under a
temporary name, then renamed over the old one, so that a full disk or a killed process leaves the previous version.

Remote paths go through ``etils.epath`` (gcsfs under it, or TensorFlow's gfile where TensorFlow is installed). An
object store has no half-written objects: an upload becomes visible whole when it completes, so one upload is the
atomic replace there. It has no folders either (a folder is a prefix of object names: :func:`makedirs` does nothing
and a folder exists while an object lies below it), no append (:func:`append_text` uploads the file anew: fine
for the small logs a run appends to) and no atomic rename of a folder (:func:`rename` copies, then deletes, object
by object). The first use of a remote path checks that its client libraries import, and says in one line how to
install them otherwise (:class:`RemotePathError`).
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import importlib
import io
import os
import posixpath
import re
from typing import Iterator

import numpy as np
from etils import epath

_URL = re.compile(r'^([A-Za-z][A-Za-z0-9+.-]*)://')
# What a remote scheme needs besides epath: gcsfs is epath's client for gs:// without TensorFlow (and makes the lock's
# exclusive create); orbax lists and deletes checkpoint steps on gs:// with google-cloud-storage.
_CLIENTS = {'gs': (('gcsfs', 'gcsfs'), ('google.cloud.storage', 'google-cloud-storage'))}
_INSTALL = "pip install -e '.[gcs]'"


class RemotePathError(ValueError):
  """A remote path jaxssl cannot use (an unsupported scheme, or its client libraries are not installed): one line
  naming the path and the fix."""


def scheme(p) -> str:
  """'gs' for ``gs://bucket/x``; '' for a local path. As written: epath knows ``gs://`` only in lower case."""
  m = _URL.match(os.fspath(p))
  return m.group(1) if m else ''


def is_remote(p) -> bool:
  """Whether ``p`` is a URL (``gs://...``) rather than a path on this machine's disks."""
  return bool(scheme(p))


def check_remote(p) -> None:
  """Raises :class:`RemotePathError` unless ``p`` is local, or remote with its client libraries importable.

  Importing them is the check (an installed but broken package fails here too, not in the middle of a run); once
  imported, each check is a dictionary lookup."""
  s = scheme(p)
  if not s:
    return
  if s not in _CLIENTS:
    raise RemotePathError(f'{p}: jaxssl reads and writes local paths and gs:// only, not {s}://')
  missing = []
  for module, package in _CLIENTS[s]:
    try:
      importlib.import_module(module)
    except ImportError:
      missing.append(package)
  if missing:
    needs = ' and '.join(package for _, package in _CLIENTS[s])
    raise RemotePathError(f'{p}: {s}:// paths need {needs}, and {" and ".join(missing)} cannot be imported; '
                          f'install them with {_INSTALL}')


def path(p) -> epath.Path:
  """``p`` as an ``etils.epath.Path`` (what orbax takes), after :func:`check_remote`."""
  check_remote(p)
  return epath.Path(p)


# ------------------------------------------------------------------------------------------------ names


def abspath(p) -> str:
  """A local path made absolute (``os.path.abspath``); a URL as it is, less a trailing slash."""
  p = os.fspath(p)
  if is_remote(p):
    stripped = p.rstrip('/')
    return p if stripped.endswith(':') else stripped  # 'gs://' alone stays whole
  return os.path.abspath(p)


def join(p, *parts) -> str:
  """``os.path.join`` for local paths; ``/``-joined for URLs (whatever the local separator)."""
  p = os.fspath(p)
  return posixpath.join(p, *parts) if is_remote(p) else os.path.join(p, *parts)


def basename(p) -> str:
  p = os.fspath(p)
  return posixpath.basename(p.rstrip('/')) if is_remote(p) else os.path.basename(p)


def dirname(p) -> str:
  p = os.fspath(p)
  return posixpath.dirname(p.rstrip('/')) if is_remote(p) else os.path.dirname(p)


def is_within(p, top) -> bool:
  """Whether ``p`` is ``top`` or below it (both made absolute; a URL is never below a local path, nor the reverse)."""
  p, top = abspath(p), abspath(top)
  if is_remote(p) or is_remote(top):
    return p == top or p.startswith(top.rstrip('/') + '/')
  return os.path.commonpath([top, p]) == top


def commonpath(paths) -> str:
  """The longest common folder of ``paths`` (all local, or all URLs of one scheme)."""
  paths = [abspath(p) for p in paths]
  remote = [p for p in paths if is_remote(p)]
  if not remote:
    return os.path.commonpath(paths)
  prefixes = {f'{scheme(p)}://' for p in paths}
  if len(remote) != len(paths) or len(prefixes) != 1:
    raise ValueError(f'no common folder of local paths and URLs, or of several schemes: {paths}')
  prefix = prefixes.pop()
  return prefix + posixpath.commonpath([p[len(prefix):] for p in paths])


# ------------------------------------------------------------------------------------------------ looking


def exists(p) -> bool:
  return path(p).exists() if is_remote(p) else os.path.exists(p)


def isdir(p) -> bool:
  return path(p).is_dir() if is_remote(p) else os.path.isdir(p)


def isfile(p) -> bool:
  """Whether ``p`` is a file (an object, on a store)."""
  if not is_remote(p):
    return os.path.isfile(p)
  q = path(p)
  return q.exists() and not q.is_dir()


def listdir(p) -> list[str]:
  """The names in folder ``p`` (FileNotFoundError if there is none)."""
  if not is_remote(p):
    return os.listdir(p)
  return [child.name for child in path(p).iterdir()]


def glob(folder, pattern: str) -> list[str]:
  """The paths of the names in ``folder`` that match ``pattern`` (fnmatch: one level, no ``**``), sorted; none if
  ``folder`` is not one. A listing and a match, so it works alike on a store, where globbing is not one call."""
  if not isdir(folder):
    return []
  return sorted(join(folder, name) for name in listdir(folder) if fnmatch.fnmatchcase(name, pattern))


def walk(top) -> Iterator[tuple[str, list[str], list[str]]]:
  """``os.walk`` (top-down; ``dirs`` may be pruned in place). On a store it lists folder by folder: epath's walk hands
  back gcsfs's bucket-relative names, which are not URLs."""
  if not is_remote(top):
    yield from os.walk(top)
    return
  dirs, names = [], []
  for name in sorted(listdir(top)):
    (dirs if isdir(join(top, name)) else names).append(name)
  yield top, dirs, names
  for name in list(dirs):
    yield from walk(join(top, name))


def mtime(p) -> float:
  """Seconds since the epoch of ``p``'s last change (an object's last upload or metadata update, on GCS).

  On a store it asks the store each time: a listing cached by this process must not hide another process's write
  (the lock compares heartbeats by it)."""
  if not is_remote(p):
    return os.stat(p).st_mtime
  check_remote(p)
  value = _fresh_fs().info(os.fspath(p)).get('mtime')
  if isinstance(value, datetime.datetime):
    return value.timestamp()
  if value is None:
    raise FileNotFoundError(f'{p}: the store gives no modification time')
  return float(value)


def _fresh_fs():
  """gcsfs without its listing cache, for what epath does not offer: exclusive creation and uncached stats."""
  import fsspec  # pylint: disable=import-outside-toplevel  # only for remote paths
  return fsspec.filesystem('gcs', use_listings_cache=False)


# ------------------------------------------------------------------------------------------------ reading


def read_bytes(p) -> bytes:
  if is_remote(p):
    return path(p).read_bytes()
  with open(p, 'rb') as f:
    return f.read()


def read_text(p, errors: str = 'strict') -> str:
  """``p`` decoded as UTF-8; ``errors='replace'`` for a file a killed writer may have cut mid-character."""
  return read_bytes(p).decode('utf-8', errors=errors)


# ------------------------------------------------------------------------------------------------ writing


def makedirs(p) -> None:
  """``os.makedirs(p, exist_ok=True)``; nothing on a store, where folders are only prefixes of object names (gcsfs
  would create the bucket of a mistyped name)."""
  if is_remote(p):
    check_remote(p)
    return
  os.makedirs(p, exist_ok=True)


def write_bytes(p, data: bytes) -> None:
  """Replaces ``p`` whole or not at all. Locally: written beside it, then renamed over it, so a full disk or a killed
  process leaves the previous version (or nothing), never half a file. On a store: one upload, which is visible only
  once complete."""
  if is_remote(p):
    path(p).write_bytes(data)
    return
  tmp = f'{p}.tmp-{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
    os.replace(tmp, p)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_text(p, text: str) -> None:
  """:func:`write_bytes` of ``text`` in UTF-8."""
  write_bytes(p, text.encode('utf-8'))


def append_text(p, text: str) -> None:
  """Appends ``text`` to ``p`` (creating it). A store cannot append: the object is read and uploaded anew, whole."""
  if not is_remote(p):
    with open(p, 'a', encoding='utf-8') as f:
      f.write(text)
    return
  old = read_bytes(p) if exists(p) else b''
  write_bytes(p, old + text.encode('utf-8'))


def create_new(p, data: bytes) -> bool:
  """Writes ``data`` to ``p`` if nothing is there, atomically; False if something is (a lock's primitive).

  Locally ``O_CREAT | O_EXCL``; on GCS an upload with the precondition that no generation of the object exists
  (``ifGenerationMatch=0``, gcsfs's ``mode='create'``), which GCS decides alone: of two runs, one wins. An upload
  retried after a lost reply finds its own object: it counts as created when the content is ours."""
  if not is_remote(p):
    try:
      fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    return True
  check_remote(p)
  try:
    _fresh_fs().pipe_file(os.fspath(p), data, mode='create')
    return True
  except FileExistsError:
    with contextlib.suppress(OSError):
      return read_bytes(p) == data
    return False


def rename(src, dst) -> None:
  """Renames a file or folder (``os.rename`` locally: atomic, within one file system). On a store a folder is
  copied, then deleted, object by object: not atomic."""
  if is_remote(src) or is_remote(dst):
    path(src).rename(path(dst))
  else:
    os.rename(src, dst)


def remove(p) -> None:
  """Removes the file ``p`` (FileNotFoundError if it is not there)."""
  if is_remote(p):
    path(p).unlink()
  else:
    os.remove(p)


def save_figure(fig, p, **savefig_kwargs) -> str:
  """A matplotlib figure written to ``p`` (format from its suffix) with :func:`write_bytes`: rendered first, so a
  failed render or write leaves the previous picture."""
  buf = io.BytesIO()
  fig.savefig(buf, format=os.path.splitext(os.fspath(p))[1].lstrip('.') or 'png', **savefig_kwargs)
  write_bytes(p, buf.getvalue())
  return os.fspath(p)


def save_array(p, array) -> str:
  """``np.save`` to ``p`` through :func:`write_bytes`; like ``np.save``, adds ``.npy`` to a name without it."""
  p = os.fspath(p)
  if not p.endswith('.npy'):
    p += '.npy'
  buf = io.BytesIO()
  np.save(buf, np.asarray(array))
  write_bytes(p, buf.getvalue())
  return p
