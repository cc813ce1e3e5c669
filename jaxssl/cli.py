"""Command-line plumbing shared by jaxssl's commands (jaxssl.main, jaxssl.study, the benches).

It defines no flags itself: the study and the benches define theirs when they run (``run``), so that every command
imports in one process beside jaxssl.main (which defines its flags on import).
"""

import contextlib
import functools
import os
import sys

from absl import app, flags


def add_config_import_path(argv):
  """Config files may import their siblings (`from configs import x`): make the folder above importable."""
  for i, arg in enumerate(argv):
    path = arg.split('=', 1)[1] if arg.startswith('--config=') else argv[i + 1] if arg == '--config' and \
        i + 1 < len(argv) else None
    if path:
      configs_dir = os.path.dirname(os.path.abspath(path.split(':', 1)[0]))
      sys.path.insert(0, os.path.dirname(configs_dir))
      return


def parse_flags(argv):
  """absl's parser, plus one clean line for a config override naming a field that does not exist."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'FATAL Flags parsing error: {e}\nPass --helpfull to see help on flags.')
  except (AttributeError, KeyError) as e:  # ml_collections: unknown field, with a suggestion
    msg = str(e).strip('\'"').replace('\\n', ' ').replace('\\\'', "'")
    sys.exit(f'FATAL Flags parsing error: no such config field: {msg}')


def one_line_errors() -> tuple[type[Exception], ...]:
  """The errors every command reports as one line, ``error: <the problem and the fix>``, exit code 2: missing or
  corrupt data, a checkpoint that does not fit or cannot be read, a workdir in use or not writable, a remote
  workdir whose client libraries are missing."""
  # pylint: disable=import-outside-toplevel  # imported when a command runs, after its config is checked
  from jaxssl.data.deepfashion import DataNotFoundError as DeepFashionNotFound
  from jaxssl.data.deepfashion_layouts import AnnotationError
  from jaxssl.data.fashion_mnist import ChecksumError, DataNotFoundError
  from jaxssl.data.datasets import NoLabelsError
  from jaxssl.data.tfds_any import TfdsError
  from jaxssl.files import RemotePathError
  from jaxssl.runlog import WriteError
  from jaxssl.train.checkpoint import CheckpointError
  from jaxssl.train.experiment import DatasetMismatchError
  from jaxssl.sharding import MeshError
  from jaxssl.train.lock import LockError
  from jaxssl.train.transfer import TransferError
  # pylint: enable=import-outside-toplevel
  return (DataNotFoundError, ChecksumError, FileNotFoundError, TransferError, DeepFashionNotFound, AnnotationError,
          LockError, CheckpointError, WriteError, RemotePathError, MeshError, DatasetMismatchError, TfdsError,
          NoLabelsError)


@contextlib.contextmanager
def errors_as_one_line(*more: type[Exception]):
  """Inside, an error of :func:`one_line_errors` (or of ``more``) ends the command with its one line and exit
  code 2."""
  try:
    yield
  except one_line_errors() + more as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def use_compilation_cache() -> str | None:
  """XLA's persistent compilation cache for a command of many short runs in one process (a study's or the
  benchmark's cells compile the same steps again, each its own closure: ~4 s of a fine-tuning cell's ~12 s outside
  its steps on 2 CPU cores, measured 2026-12-01), kept in ``$JAXSSL_CACHE_DIR/xla`` (default
  ``~/.cache/jaxssl/xla``, the folder's owner checked as for the oneDNN library: an executable found there runs in
  the process; small entries, kilobytes to a few MB each, which may be deleted at any time).
  ``JAX_COMPILATION_CACHE_DIR`` set, even empty (off), is the user's choice and is kept. Returns the folder, or None
  where the cache is off."""
  # pylint: disable=import-outside-toplevel  # jax and the cache folder: when a command runs
  import jax
  from jaxssl.ops import onednn
  if 'JAX_COMPILATION_CACHE_DIR' in os.environ:   # jax has read it itself
    return os.environ['JAX_COMPILATION_CACHE_DIR'] or None
  try:
    path = str(onednn.cache_dir() / 'xla')
  except RuntimeError:   # a folder another user could write to: no cache (the oneDNN build says why, in one line)
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)   # a cell's many small compiles add up
  return path


def run(define_flags, main) -> None:
  """Runs a command: its flags defined by ``define_flags()`` now rather than on import (so that all commands
  import in one process), then ``main(argv, opts=<what define_flags returned>)`` under absl."""
  opts = define_flags()
  add_config_import_path(sys.argv)
  app.run(functools.partial(main, opts=opts), flags_parser=parse_flags)


def run_config_command(what: str, example: str, workdir_help: str, body, *more_errors: type[Exception]) -> None:
  """A ``--config FILE[:arg] --workdir DIR`` command (jaxssl.study, jaxssl.benchmark): its two flags defined now,
  absl's log at WARNING unless --verbosity is given, the config checked (one line if bad), then
  ``body(config, workdir)`` with :func:`errors_as_one_line` (and ``more_errors``), XLA's compilation cache on
  (:func:`use_compilation_cache`)."""
  # pylint: disable=import-outside-toplevel  # flag definitions and the check: when the command runs only
  from ml_collections import config_flags
  from absl import logging

  def define_flags():
    opts = (config_flags.DEFINE_config_file('config', None, f'{what} config, e.g. {example}.', lock_config=True),
            flags.DEFINE_string('workdir', None, workdir_help))
    for name in ('config', 'workdir'):   # defined here, shown by the command's --help (absl's key flags of __main__)
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
    return opts

  def main(argv, opts):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    from jaxssl.config_check import check_config
    config, workdir = opts[0].value, opts[1].value
    try:
      check_config(config)
    except ValueError as e:
      sys.exit(f'error: bad config: {e}')
    use_compilation_cache()
    with errors_as_one_line(*more_errors):
      body(config, workdir)

  def define_required():
    opts = define_flags()
    flags.mark_flags_as_required(['config', 'workdir'])
    return opts

  run(define_required, main)
