"""The base of jaxssl's own tfds builders whose builder configs are made at run time from the data config (an
image size, a source folder), prepared once into ArrayRecord and read with random access, without TensorFlow."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time

import tensorflow_datasets as tfds

from jaxssl.runlog import log

# Seconds between the progress lines of a split being prepared (a DeepFashion or image folder of 100,000s of
# photos takes many minutes).
PROGRESS_S = 10.0


class RuntimeConfiguredBuilder(tfds.core.GeneratorBasedBuilder):
  """A builder given its config object at construction, not from a fixed BUILDER_CONFIGS list. Abstract (no
  ``_info`` and generators), so tfds does not register it as a dataset."""

  _configs: dict = {}   # each subclass gets its own (see __init_subclass__)

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    cls._configs = {}

  def __init__(self, *, config, workers: int = 0, **kwargs):
    self._workers = workers or os.cpu_count() or 1
    type(self)._configs[config.name] = config
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(config=config, **kwargs)

  @classmethod
  def get_builder_config(cls, name, version=None):
    """Configs are made from the data config rather than listed in BUILDER_CONFIGS; knowing them here keeps
    tfds from logging "Using custom data configuration" every time a split is opened."""
    del version
    return cls._configs.get(name)


class _NotYetPrepared(logging.Filter):
  """Drops tfds' ``Variant folder <builder's data_dir> has no dataset_info.json``, which it logs (a cryptic
  ``W... file_utils.py:394]`` line, in front of the first preparation's log and of any data error) when asked
  whether a copy that does not exist yet is prepared; every other record passes."""

  def __init__(self, data_dir: str):
    super().__init__()
    self._data_dir = data_dir

  def filter(self, record: logging.LogRecord) -> bool:
    try:
      message = record.getMessage()
    except (TypeError, ValueError):   # a record whose arguments do not fit its format: not tfds' message
      return True
    return not (message.startswith(f'Variant folder {self._data_dir}')
                and message.endswith(' has no dataset_info.json'))


@contextlib.contextmanager
def _quiet_until_prepared(builder):
  """Inside, tfds' "no dataset_info.json" line about ``builder``'s own folder is not logged (absl's logger)."""
  quiet = _NotYetPrepared(str(builder.data_dir))
  absl_logger = logging.getLogger('absl')
  absl_logger.addFilter(quiet)
  try:
    yield
  finally:
    absl_logger.removeFilter(quiet)


def is_prepared(builder) -> bool:
  """``builder.is_prepared()`` without tfds' warning that the copy not made yet has no dataset_info.json."""
  with _quiet_until_prepared(builder):
    return builder.is_prepared()


class SplitProgress:
  """The lines a split being prepared prints: every :data:`PROGRESS_S` seconds how far it is (``update``), and when
  it is written how many images it has and how long it took (``finish``)."""

  def __init__(self, what: str, split: str, total: int):
    self.what, self.split, self.total = what, split, total
    self.start = self.last = time.monotonic()

  def update(self, done: int) -> None:
    if time.monotonic() - self.last < PROGRESS_S:
      return
    self.last = time.monotonic()
    rate = done / max(self.last - self.start, 1e-9)
    log(f'{self.what} {self.split}: {done:,} / {self.total:,} images ({rate:,.0f}/s, about '
        f'{(self.total - done) / max(rate, 1e-9):,.0f} s left)')

  def finish(self, written: int, skipped: int) -> None:
    log(f'{self.what} {self.split}: {written:,} images prepared in {time.monotonic() - self.start:,.1f} s'
        + (f', {skipped} skipped' if skipped else ''))


def prepare_once(builder, reopen):
  """Prepares ``builder``; where another process (a host of the same run, a second run) finished the same copy
  first, tfds' final rename fails and ``reopen()``'s builder reads theirs. Returns (builder, whether this process
  wrote the copy). tfds' progress bars and its two lines ("Downloading and preparing dataset Unknown size ..." and
  "... downloaded and prepared to ...": nothing is downloaded) are off: jaxssl's builders log their own progress,
  and this the folder it wrote."""
  tfds.disable_progress_bar()
  for tfds_line in ('_log_download_bytes', '_log_download_done'):
    setattr(builder, tfds_line, lambda: None)
  start = time.monotonic()
  try:
    with _quiet_until_prepared(builder):
      builder.download_and_prepare()
    log(f'prepared in {time.monotonic() - start:,.1f} s: {builder.data_dir} (later runs read it)')
    return builder, True
  except FileExistsError:
    builder = reopen()
    if not is_prepared(builder):
      raise
    return builder, False


def write_skipped(builder, counted: str) -> None:
  """``skipped_images.json`` beside a prepared copy: every image skipped at prepare time (missing or unreadable)
  per split, and per split how many were ``counted`` (listed or annotated) and written."""
  splits = builder.info.metadata.get('splits', {})
  report = {'skipped': {s: v['skipped'] for s, v in splits.items()},
            'counts': {s: {counted: v[counted], 'written': v['written']} for s, v in splits.items()}}
  with open(os.path.join(builder.data_dir, 'skipped_images.json'), 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=2)


def skipped_images(builder) -> dict[str, list[dict[str, str]]]:
  """Split -> the images skipped when ``builder``'s copy was prepared (from its metadata)."""
  return {s: v['skipped'] for s, v in builder.info.metadata.get('splits', {}).items()}
