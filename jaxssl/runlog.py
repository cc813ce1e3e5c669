"""What a run leaves behind and shows: JSON-lines metrics, TensorBoard events, a progress line; and how a
file of the run is written so that a full disk or a killed process never loses what was there before."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import sys
import time
from typing import Any

import jax
import numpy as np

from jaxssl import files

# A disk's refusals, by what fixes them; any other OSError is not about where the run writes.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_NOT_A_FOLDER = (errno.ENOTDIR, errno.EEXIST, errno.EISDIR)
# tensorstore (orbax's writer) reports an OS error inside its message, not as an OSError.
_TENSORSTORE_OS_ERROR = re.compile(r"\[os_error_code='(\d+)'\]")


class WriteError(OSError):
  """A file of the run could not be written (disk full, read-only, a file where a folder belongs): one line
  naming the path, the cause and the fix. What was written before is intact."""


def write_error(exc: BaseException, path: str = '', workdir: str = '', *, elsewhere: str = 'point --workdir elsewhere',
                context: str = '') -> WriteError | None:
  """``exc`` as a :class:`WriteError` when it is a disk's refusal, else None. ``path`` names what was being
  written when ``exc`` does not; ``workdir`` chooses the fix (a path outside it is not the run's to move);
  ``elsewhere`` is the other way out (another --workdir; the prepared data's folder for a dataset) and
  ``context`` what the folder is, put before the fix. A file in the way of a folder is named, not the path
  below it that could not be made."""
  if isinstance(exc, WriteError):
    return exc
  code = exc.errno if isinstance(exc, OSError) else None
  if code is None and (m := _TENSORSTORE_OS_ERROR.search(str(exc))):
    code = int(m.group(1))
  if code is None and isinstance(exc, OSError) and str(exc).startswith('Forbidden'):
    code = errno.EACCES  # gcsfs: HTTP 403, no errno
  if code not in _FULL + _READ_ONLY + _NOT_A_FOLDER:
    return None
  where = (getattr(exc, 'filename', None) if isinstance(exc, OSError) else None) or path or '?'
  ours = bool(workdir) and files.is_within(str(where), workdir)
  if code in _FULL:
    fix = 'free space there and rerun the same command (what was written before is intact)'
  elif code in _READ_ONLY:
    fix = (f'the run cannot write there: make it writable, or {elsewhere}' if ours or not workdir
           else 'this process may not use that path: check its permissions')
  elif code == errno.EISDIR:
    fix = f'a folder stands where a file is needed: move it away, or {elsewhere}'
  else:
    blocking = str(where)
    while not files.is_remote(blocking) and not os.path.lexists(blocking) and os.path.dirname(blocking) != blocking:
      blocking = os.path.dirname(blocking)   # up to the file in the way
    where = blocking if os.path.isfile(blocking) else where
    fix = f'a file stands where a folder is needed: move it away, or {elsewhere}'
  return WriteError(f'{where}: {os.strerror(code)} ({errno.errorcode.get(code, code)}); {context}{fix}')


@contextlib.contextmanager
def writing(path: str = '', workdir: str = ''):
  """Inside it, a disk's refusal becomes one :class:`WriteError` line (see :func:`write_error`)."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-exception-caught  # tensorstore raises bare Exceptions
    err = write_error(e, path, workdir)
    if err is None:
      raise
    raise err from e


def write_text(path: str, text: str) -> None:
  """Replaces ``path`` whole or not at all (:func:`jaxssl.files.write_text`: written beside it, then renamed over
  it; one upload on a store), so a full disk or a killed process leaves the previous version (or nothing), never
  half a file; a refusal is one :class:`WriteError` line."""
  with writing(path):
    files.write_text(path, text)


def write_json(path: str, value: Any) -> None:
  write_text(path, json.dumps(value, indent=2) + '\n')


class MetricWriter:
  """Appends ``{'step', 'split', metrics...}`` to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

  Only process 0 writes. The file holds the whole history of the workdir: a run that starts at ``start_step``
  (resumed from that checkpoint, or 0) first drops the rows of later steps, which it is about to run again (and
  those of ``rerun_split`` at ``start_step`` itself: the final evaluation of a run resumed at its end), and any
  torn line a killed writer left, so that a step is never logged twice and an appended row never lands on half a
  line.
  """

  def __init__(self, workdir: str, start_step: int = 0, rerun_split: str | None = None):
    self.active = jax.process_index() == 0
    self.path = files.join(workdir, 'metrics.jsonl')
    self._tb = None
    if self.active:
      with writing(self.path, workdir):
        _drop_rows_after(self.path, start_step, rerun_split)
        self._tb = _events_writer(workdir)
    self._workdir = workdir
    # On a store an append re-uploads the whole file: train rows are batched, uploaded at most every
    # _EVENTS_UPLOAD_S seconds, and at once with any evaluation's row (the curves read the file then) and on close.
    self._pending: list[str] = []
    self._uploaded = time.monotonic()

  def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
    if not self.active:
      return
    row = {'step': int(step), 'split': split, **{k: float(v) for k, v in metrics.items()}}
    with writing(self.path, self._workdir):
      self._pending.append(json.dumps(row) + '\n')
      if (not files.is_remote(self.path) or split != 'train'
          or time.monotonic() - self._uploaded >= _EVENTS_UPLOAD_S):
        self._append_pending()
      for k, v in metrics.items():
        self._tb.add_scalar(f'{split}/{k}', float(v), int(step))
      self._tb.flush()

  def _append_pending(self) -> None:
    if self._pending:  # taken first: rows a disk refused are reported once, not again at close
      text, self._pending, self._uploaded = ''.join(self._pending), [], time.monotonic()
      files.append_text(self.path, text)

  def close(self) -> None:
    if self._pending:
      with writing(self.path, self._workdir):
        self._append_pending()
    if self._tb is not None:
      with writing(files.join(self._workdir, 'tensorboard'), self._workdir):
        self._tb.close()


def _events_writer(workdir: str):
  """A tensorboardX writer of a new events file in ``workdir/tensorboard``; on a store its bytes go through
  jaxssl.files, as every other file of the run (:class:`_StoreEvents`)."""
  from tensorboardX import SummaryWriter, record_writer  # pylint: disable=import-outside-toplevel
  if files.is_remote(workdir):
    record_writer.register_writer_factory(files.scheme(workdir), _StoreEvents())
  return SummaryWriter(files.join(workdir, 'tensorboard'))


def write_image(workdir: str, tag: str, image: np.ndarray, step: int) -> None:
  """One picture (uint8 [H, W, 3]) into the run's TensorBoard events under ``tag``, beside the scalars. Evaluators
  do not hold the trainer's writer: each picture goes through a writer of its own (one more small events file in
  ``tensorboard/``, which TensorBoard reads with the others). Only process 0 writes."""
  if jax.process_index():
    return
  with writing(files.join(workdir, 'tensorboard'), workdir):
    writer = _events_writer(workdir)
    try:
      writer.add_image(tag, np.asarray(image), int(step), dataformats='HWC')
    finally:
      writer.close()


# Uploads of a growing events file at most this often: GCS takes about one write per second of one object, and
# the run's numbers are in metrics.jsonl anyway; closing uploads the rest.
_EVENTS_UPLOAD_S = 10.0


class _StoreEventFile:
  """A TensorBoard events file on a store, for tensorboardX's RecordWriter: records are appended in memory and
  each flush uploads the whole file (a store cannot append; tensorboardX's own GCS writer does the same, through
  google-cloud-storage), at most every ``_EVENTS_UPLOAD_S`` seconds."""

  def __init__(self, path: str):
    self.path = path
    self._buf = io.BytesIO()
    self._sent, self._last = 0, float('-inf')

  def write(self, data: bytes) -> None:
    self._buf.write(data)

  def flush(self) -> None:
    if self._buf.tell() != self._sent and time.monotonic() - self._last >= _EVENTS_UPLOAD_S:
      self._upload()

  def close(self) -> None:
    if self._buf.tell() != self._sent:
      self._upload()

  def _upload(self) -> None:
    data = self._buf.getvalue()
    files.write_bytes(self.path, data)
    self._sent, self._last = len(data), time.monotonic()


class _StoreEvents:
  """tensorboardX's writer factory (``record_writer.register_writer_factory``) for a remote scheme."""

  def open(self, path: str) -> _StoreEventFile:
    return _StoreEventFile(path)

  def directory_check(self, path: str) -> None:
    files.check_remote(path)  # a store has no folders to make


def _parse_lines(path: str) -> tuple[list[tuple[str, dict[str, Any]]], list[int]]:
  """(line, row) of every row of a metrics file, and the numbers of the lines that are not one (torn)."""
  rows, bad = [], []
  # Lines as a text file gives them (universal newlines); the file is read whole, in one request on a store.
  for n, line in enumerate(io.StringIO(files.read_text(path, errors='replace'), newline=None), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError:
      bad.append(n)
      continue
    if isinstance(row, dict) and isinstance(row.get('step'), int):
      rows.append((line if line.endswith('\n') else line + '\n', row))
    else:
      bad.append(n)
  return rows, bad


def _drop_rows_after(path: str, step: int, rerun_split: str | None = None) -> None:
  """Rewrites ``path`` (whole, or not at all) without rows of steps after ``step`` (or of ``rerun_split`` at
  ``step``) and without torn lines."""
  if not files.isfile(path):  # absent, or not a plain file: nothing of the run's to rewrite
    return
  rows, bad = _parse_lines(path)
  kept = [line for line, row in rows
          if row['step'] < step or row['step'] == step and row.get('split') != rerun_split]
  if len(kept) == len(rows) and not bad:
    return
  write_text(path, ''.join(kept))
  torn = f' and {len(bad)} torn line(s) (line {", ".join(map(str, bad))})' if bad else ''
  log(f'{path}: dropped {len(rows) - len(kept)} row(s) of steps this run repeats (after {step}){torn}')


_REPORTED: set[str] = set()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The rows of ``workdir``'s metrics.jsonl. A line that is not a row (a writer killed mid-line) is skipped and
  reported once on stderr: the rest of the history stands."""
  path = files.join(workdir, 'metrics.jsonl')
  if not files.isfile(path):
    return []
  rows, bad = _parse_lines(path)
  if bad and path not in _REPORTED:
    _REPORTED.add(path)
    print(f'warning: {path}: skipped {len(bad)} line(s) that are not JSON rows (line {", ".join(map(str, bad))}; '
          'a run killed mid-write leaves a torn last line, which its next run drops)', file=sys.stderr)
  return [row for _, row in rows]


def duration(seconds: float) -> str:
  """An ETA as the progress lines write it: ``1h02m`` or ``3m05s``."""
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
           f'ETA {duration(eta) if rate else "?"}')
    return msg, rate


def log(msg: str) -> None:
  """Progress for people: stdout of process 0 only (absl logging is left to libraries' chatter)."""
  if jax.process_index() == 0:
    print(msg, flush=True)
