"""Command-line plumbing shared by jaxssl's commands (jaxssl.main, jaxssl.study, the benches).

It defines no flags itself: the study and the benches define theirs when they run (``run``), so that every command
imports in one process beside jaxssl.main (which defines its flags on import).
"""

import ast
import contextlib
import functools
import os
import sys
import traceback
from typing import NoReturn

from absl import app, flags


def _config_specs(argv) -> list[str]:
  """The values of --config on a command line."""
  return [arg.split('=', 1)[1] if arg.startswith('--config=') else argv[i + 1]
          for i, arg in enumerate(argv) if arg.startswith('--config=') or (arg == '--config' and i + 1 < len(argv))]


def add_config_import_path(argv):
  """Config files may import their siblings (`from configs import x`): make the folder above importable."""
  for path in _config_specs(argv)[:1]:
    configs_dir = os.path.dirname(os.path.abspath(path.split(':', 1)[0]))
    sys.path.insert(0, os.path.dirname(configs_dir))


# Config blocks whose keys are open: an override may set a key the config file leaves out (a task option at its
# default, a model option, an evaluator, a study's or the benchmark's init), and what reads the block checks it
# (jaxssl.config_check: each task's and evaluator's options, the backbone's keyword arguments). A new key anywhere
# else is a typo: one line naming it, what its block has and the nearest name.
OPEN_BLOCKS = ('tasks', 'model.options', 'evals', 'study.inits', 'benchmark.inits', 'benchmark.feature_map',
               'benchmark.scratch_overrides', 'benchmark.pretrain_overrides')


def config_file_flag(help_text: str, flag_values: flags.FlagValues = flags.FLAGS, argv=None):
  """A ``--config FILE[:arg]`` flag with ``--config.<key>=value`` overrides. Overrides may add keys under
  :data:`OPEN_BLOCKS` (parsed as Python literals, else strings); :func:`parse_flags` refuses new keys elsewhere and
  then locks the config (a key set by mistake in code raises)."""
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  return config_flags.DEFINE_config_file('config', None, help_text, flag_values=flag_values, lock_config=False,
                                         accept_new_attributes=True, sys_argv=argv)


def load_config_file(path: str, arg: str | None = None, module_name: str = 'jaxssl_config_file'):
  """The config a config file makes, as ml_collections' config flag loads ``path[:arg]``: the file executed as a
  module of its own, then its ``get_config(arg)`` (``get_config()`` when arg is None: no colon)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)


def _base_config(spec: str):
  """The config as its file makes it, without the command line's overrides."""
  path, colon, arg = spec.partition(':')
  return load_config_file(path, arg if colon else None, 'jaxssl_cli_base_config')


# Open blocks whose new keys are names (an init, a run), where a misspelt existing one would add a run silently.
_NAMED_BLOCKS = ('study.inits', 'benchmark.inits')


def _check_new_keys(flag) -> None:
  """:func:`fail` on an override that adds a key outside :data:`OPEN_BLOCKS`, or a new name in a block of names a
  letter or two from one there (``study.inits.rotaton``: a typo, not another init; ``rotation2`` extends the name
  and is new); then the config is locked."""
  import difflib  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  overrides = config_flags.get_override_values(flag)
  new = [k for k in overrides if not any(k.startswith(f'{b}.') for b in OPEN_BLOCKS)]
  named = [k for k in overrides if any(k.startswith(f'{b}.') and k.count('.') == b.count('.') + 1
                                       for b in _NAMED_BLOCKS)]
  if new or named:
    base = _base_config(flag.config_filename)
    for key in new:
      parts, node = key.split('.'), base
      for i, part in enumerate(parts):
        has = list(node.keys()) if hasattr(node, 'keys') else []
        if part not in has:
          where = '.'.join(parts[:i]) or 'the config'
          near = difflib.get_close_matches(part, has, n=1)
          fail(f'no such config field: {key}' + (f' (did you mean {".".join(parts[:i] + near)}?)' if near else '') +
               (f'; {where} has: {", ".join(sorted(has))}' if has else f'; {where} is not a block of keys'))
        node = node[part]
    for key in named:
      block, name = key.rsplit('.', 1)
      has = list(base[block.split('.')[0]][block.split('.')[1]].keys()) if block.split('.')[0] in base else []
      near = [n for n in difflib.get_close_matches(name, has, n=1, cutoff=0.8) if not name.startswith(n)]
      if name not in has and near:
        fail(f'--config.{key}: did you mean {block}.{near[0]}? ({block} has: {", ".join(has)}; a new name that '
             f'close to one of them is taken for a typo: name it otherwise, e.g. {near[0]}_2)')
  if hasattr(flag.value, 'lock'):
    flag.value.lock()


def fail(message: str) -> NoReturn:
  """Ends the command with one line on stderr, ``error: <message>``, and exit code 2 (every bad input's)."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _fail_if_a_config_did_not_load() -> None:
  """One line for a config flag whose file could not be loaded: ml_collections keeps that error for the config's
  first use, a traceback deep in the command."""
  from ml_collections.config_flags import config_flags  # pylint: disable=import-outside-toplevel
  error_config = getattr(config_flags, '_ErrorConfig', None)
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if error_config is not None and isinstance(flag.value, error_config):
      why = [line.strip() for line in str(object.__getattribute__(flag.value, '_error')).splitlines() if line.strip()]
      fail(f'--{name}={getattr(flag, "config_filename", "")}: cannot load the config file '
           f'({why[-1] if why else "it cannot be read"})')


def _fail_on_a_missing_block(argv, missing: str) -> None:
  """One line for an override under a block that is not there: in an open block (a task, an evaluator), how to add
  it whole; elsewhere, the override's full name."""
  for arg in argv:
    name, eq, value = arg.partition('=')
    parts = name.removeprefix('--config.').split('.')
    if name.startswith('--config.') and missing in parts[:-1]:
      block = '.'.join(parts[:parts.index(missing) + 1])
      key = name.removeprefix('--config.')
      if any(block.startswith(f'{b}.') for b in OPEN_BLOCKS):
        if not eq or value in ('true', 'false'):   # a bare --config.x.flag, or absl's spelling of a bool
          value = 'False' if value == 'false' else 'True'
        leaf = _literal(value, default=value)
        inner = parts[parts.index(missing) + 1:]   # the key's path below the block: 'k', or 'opts', 'k'
        whole = _given_whole(argv, block)
        example = _nested(dict(whole or {}), inner, leaf)
        if whole is not None:   # the block is on the command line too: its keys go in it
          fail(f'no such config field: {key}: --config.{block} gives that block whole, and its keys cannot be '
               f'overridden one by one beside it; set {".".join(inner)} in it, e.g. --config.{block}="{example!r}"')
        fail(f'no such config field: {key}: the config has no {block} to set {".".join(inner)} in; add it whole, '
             f'e.g. --config.{block}="{example!r}"')
      fail(f'no such config field: {key} (the config has no {block})')


_NOT_A_LITERAL = (SyntaxError, ValueError, TypeError, MemoryError, RecursionError)   # what ast.literal_eval raises


def _literal(text: str, default=None):
  """``text`` read as a Python literal, or ``default`` where it is none."""
  try:
    return ast.literal_eval(text)
  except _NOT_A_LITERAL:
    return default


def _nested(whole: dict, path: list[str], leaf) -> dict:
  """``whole`` with ``leaf`` set at ``path`` (dicts made or copied on the way)."""
  node = whole
  for name in path[:-1]:
    node[name] = dict(node[name]) if isinstance(node.get(name), dict) else {}
    node = node[name]
  node[path[-1]] = leaf
  return whole


def _given_whole(argv, block: str) -> dict | None:
  """The dict that ``--config.<block>=...`` on the command line gives the block, or None."""
  for arg in argv:
    name, eq, value = arg.partition('=')
    if eq and name == f'--config.{block}':
      whole = _literal(value)
      return whole if isinstance(whole, dict) else None
  return None


def _raised_by_the_config_file(e: BaseException, specs: list[str]) -> bool:
  """Whether ``e`` came from the config file's own code (its traceback passes through the file)."""
  paths = {os.path.abspath(spec.split(':', 1)[0]) for spec in specs}
  return any(os.path.abspath(frame.filename) in paths for frame in traceback.extract_tb(e.__traceback__))


def _fail_on_a_config_bug(e: BaseException, specs: list[str]) -> NoReturn:
  """A config file that raises while it loads (a bug there): its traceback, then the one line."""
  traceback.print_exception(e)
  fail(f'--config={(specs or ["?"])[-1]}: loading it raised {type(e).__name__}: {" ".join(str(e).split())[:200]} '
       '(a bug in the config file? its traceback is above)')


def parse_flags(argv):
  """absl's parser, each error one line (:func:`fail`): a bad flag or override, a config field that does not exist,
  a config file that cannot be loaded, a config argument the config refuses (its ValueError; another exception in
  a config file is a bug there, shown with its traceback)."""
  specs = _config_specs(argv)
  if len(specs) > 1:
    fail(f'--config is given {len(specs)} times ({", ".join(specs)}): give it once')
  for spec in specs:
    path = spec.split(':', 1)[0]
    if not path.endswith('.py'):
      fail(f'--config={spec}: a config is a Python file whose get_config() returns it, e.g. '
           'configs/fmnist_supervised.py (a run\'s config.json records the keys it ran with; it is not one)')
  try:
    rest = flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, OSError) as e:
    if not isinstance(e, flags.Error) and _raised_by_the_config_file(e, specs):
      _fail_on_a_config_bug(e, specs)
    _fail_if_a_config_did_not_load()   # its overrides fail on it: the file is the problem
    if isinstance(e, OSError):   # an override applied to a config file that did not load
      if 'failure to load' not in str(e):
        raise
      fail(f'cannot load the config file ({[line.strip() for line in str(e).splitlines() if line.strip()][-1]})')
    if not isinstance(e, flags.Error):   # ml_collections: unknown field (a block that is not there), or a suggestion
      missing = str(e).strip('\'"').replace('\\n', ' ').replace('\\\'', "'")
      if "has no attribute 'get_config" in missing:
        fail(f'--config={specs[-1]}: the file has no get_config(), which a config file defines to '
             'return its config (configs/fmnist_supervised.py is one)')
      _fail_on_a_missing_block(argv, missing)
      fail(f'no such config field: {missing}')
    text = str(e)
    head, sep, trace = text.partition(': Error whilst parsing config file:')
    last = next((line for line in reversed(trace.splitlines()) if line.strip()), '')
    if sep and last.startswith('ValueError: '):
      fail(f'{head.removeprefix("flag ")}: {last.removeprefix("ValueError: ")}')
    if sep:
      print(text, file=sys.stderr)
      fail(f'{head.removeprefix("flag ")}: the config file raised {last or "an error"} (its traceback above)')
    fail(f'{text} (--helpfull lists the flags)')
  except Exception as e:  # pylint: disable=broad-exception-caught  # what a config file's own code raises
    odd = [a.partition('=')[0] for a in argv if a.startswith('--config.') and '-' in a.partition('=')[0][2:]]
    if isinstance(e, ValueError) and 'malformed node' in str(e) and odd:   # ml_collections parses the key as Python
      fail(f'no such config field: {odd[0].removeprefix("--config.")}: config keys are Python names (underscores, '
           'not hyphens)')
    _fail_on_a_config_bug(e, specs)
  _fail_if_a_config_did_not_load()
  for name in flags.FLAGS:
    if hasattr(flags.FLAGS[name], 'config_filename') and flags.FLAGS[name].value is not None:
      _check_new_keys(flags.FLAGS[name])
  return rest


def one_line_errors() -> tuple[type[Exception], ...]:
  """The errors every command reports as one line, ``error: <the problem and the fix>``, exit code 2: missing or
  corrupt data, a checkpoint that does not fit or cannot be read, a workdir in use or not writable, a remote
  workdir whose client libraries are missing, an evaluator's layer the backbone lacks."""
  # pylint: disable=import-outside-toplevel  # imported when a command runs, after its config is checked
  from jaxssl.data.deepfashion import DataNotFoundError as DeepFashionNotFound
  from jaxssl.data.deepfashion_layouts import AnnotationError
  from jaxssl.data.fashion_mnist import ChecksumError, DataNotFoundError
  from jaxssl.data.datasets import NoLabelsError
  from jaxssl.data.tfds_any import TfdsError
  from jaxssl.eval.features import FeatureError
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
          NoLabelsError, FeatureError)


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
  ``~/.cache/jaxssl/xla``), a private folder refused as the oneDNN library's is (an executable found there runs in
  the process). ``JAX_COMPILATION_CACHE_DIR`` names another folder; ``JAX_ENABLE_COMPILATION_CACHE=false`` turns it
  off. Every compile is cached unless ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says otherwise (a cell's many
  small ones add up). A folder that cannot be used leaves the cache off with one line saying why. Returns the
  folder in use, or None."""
  # pylint: disable=import-outside-toplevel  # jax and the cache folder: when a command runs
  import jax
  from jaxssl.ops import onednn
  if not jax.config.values['jax_enable_compilation_cache']:   # JAX_ENABLE_COMPILATION_CACHE=false
    return None
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):   # the user's folder: jax has read it itself
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  try:
    path = str(onednn.private_dir(onednn.cache_dir() / 'xla', 'the XLA compilation cache', 'a compiled program'))
  except (RuntimeError, OSError) as e:
    print(f'warning: no XLA compilation cache (each run compiles its steps anew): {e}', file=sys.stderr)
    return None
  jax.config.update('jax_compilation_cache_dir', path)
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
  from absl import logging  # pylint: disable=import-outside-toplevel

  def define_flags():
    opts = (config_file_flag(f'{what} config, e.g. {example}.'),
            flags.DEFINE_string('workdir', None, workdir_help))
    for name in ('config', 'workdir'):   # defined here, shown by the command's --help (absl's key flags of __main__)
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
    return opts

  def main(argv, opts):
    if len(argv) > 1:
      fail(f'unexpected arguments: {" ".join(argv[1:])} (flags are --name=value; --help lists them)')
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    from jaxssl.config_check import check_config  # pylint: disable=import-outside-toplevel
    config, workdir = opts[0].value, opts[1].value
    if not workdir.strip():
      fail('--workdir is empty (an unset shell variable?): give the folder of the run')
    try:
      check_config(config)
    except ValueError as e:
      fail(f'bad config: {e}')
    use_compilation_cache()
    with errors_as_one_line(*more_errors):
      body(config, workdir)

  def define_required():
    opts = define_flags()
    flags.mark_flags_as_required(['config', 'workdir'])
    return opts

  run(define_required, main)
