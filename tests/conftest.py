"""Shared fixtures: the real data (Fashion-MNIST prepared once per session into a temporary tfds data_dir, the
DeepFashion attribute sample), generated Fashion-MNIST files that stand in for them, and the ``real_data`` marker.

Two tiers: ``pytest -m real_data`` runs the tests on the real files, ``pytest -m 'not real_data'`` the tests that
need no data files (a machine without them runs this tier and skips nothing for want of data); plain ``pytest``
runs both.

CI leaves nothing to chance (``.ci/run`` exports both): with ``JAXSSL_REQUIRE_REAL_DATA=1`` the run stops at once,
in one line, where the real Fashion-MNIST or the DeepFashion sample is missing, and with ``JAXSSL_REQUIRE_ONEDNN=1``
where oneDNN's convolutions cannot be built (the compiler's first error in that line); any test that still skips
for those reasons fails. Without them, a developer who lacks the files or a compiler gets clean skips.

Isolation: the session runs with HOME, XDG_CACHE_HOME, XDG_CONFIG_HOME, TFDS_DATA_DIR and JAXSSL_CACHE_DIR
pointing into a temporary folder (subprocesses inherit them), so no test reads or writes the user's home or
caches. The oneDNN library is copied there from the user's cache when an intact one for this toolchain is there
(read only), else built there once (about 5 s on 2 cores).
"""

import contextlib
import dataclasses
import gzip
import hashlib
import os
import pathlib
import re
import shutil
import sys
import tempfile

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # configs/ is imported as a package by the tests

# Python source for a subprocess: at the first evaluation line a run logs (a cell that evaluates only at its end:
# the final evaluation's, after its last step) the process sends SIGTERM to itself, once (JAXSSL_TEST_SIGNALLED
# set: never). A real signal where no training step is left to act on it.
SIGNAL_IN_FINAL_EVALUATION = (
    'import os, signal\n'
    'from jaxssl.train import loop\n'
    'fmt = loop.fmt\n'
    'def fmt_then_signal(metrics):\n'
    '  if not os.environ.get("JAXSSL_TEST_SIGNALLED"):\n'
    '    os.environ["JAXSSL_TEST_SIGNALLED"] = "1"\n'
    '    os.kill(os.getpid(), signal.SIGTERM)\n'
    '  return fmt(metrics)\n'
    'loop.fmt = fmt_then_signal\n')

# Fixtures that reach for the real files; a test that uses one (directly or through another fixture) is real_data.
REAL_DATA_FIXTURES = frozenset({'fmnist_source_dir', 'tfds_dir', 'deepfashion_sample'})
# A skip mark for want of the real files (test_fashion_mnist.py's `needs_real` checks a module-level path).
_REAL_DATA_SKIP = re.compile(r'\breal\b.*\bnot found\b')
# CI's switches (.ci/run): a skip for want of the real files, or of oneDNN, fails the run instead.
REQUIRE_REAL_DATA = 'JAXSSL_REQUIRE_REAL_DATA'
REQUIRE_ONEDNN = 'JAXSSL_REQUIRE_ONEDNN'
_ONEDNN_SKIP = re.compile(r'\boneDNN\b')
# How a test says it skips for the hardware, not for the build: never turned into a failure.
NO_BF16_CPU = 'this CPU has no bfloat16 instructions'


def fashion_mnist_dir() -> str | None:
  """CI sets JAXSSL_FASHION_MNIST_DIR; a checkout beside ../shared finds the data there."""
  for d in (os.environ.get('JAXSSL_FASHION_MNIST_DIR'), REPO.parent / 'shared' / 'data' / 'fashion_mnist',
            '/usr/share/datasets/fashion-mnist'):
    if d and (pathlib.Path(d).expanduser() / 't10k-labels-idx1-ubyte.gz').exists():
      return os.path.abspath(os.path.expanduser(d))
  return None


def deepfashion_sample_dir() -> str | None:
  """$JAXSSL_DEEPFASHION_SAMPLE_DIR, else ../shared/data/deepfashion_attr_sample beside the checkout."""
  for d in (os.environ.get('JAXSSL_DEEPFASHION_SAMPLE_DIR'),
            REPO.parent / 'shared' / 'data' / 'deepfashion_attr_sample'):
    if d and (pathlib.Path(d).expanduser() / 'split' / 'train_attr.txt').exists():
      return os.path.abspath(os.path.expanduser(d))
  return None


def _required(variable: str) -> bool:
  return os.environ.get(variable, '') not in ('', '0')


def cpu_has_bf16() -> bool:
  """Whether the CPU says it has bfloat16 instructions (AVX512-BF16 or AMX-BF16): where oneDNN has fast kernels."""
  try:
    flags = pathlib.Path('/proc/cpuinfo').read_text(encoding='utf-8', errors='replace').split()
  except OSError:
    return False
  return 'avx512_bf16' in flags or 'amx_bf16' in flags


def onednn_skip_reason() -> str | None:
  """Why the oneDNN tests skip (None: they run): oneDNN's own reason, in one line."""
  from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel
  reason = onednn.unavailable_reason()
  return None if reason is None else f'oneDNN unavailable: {one_line(reason)}'


def onednn_bf16_skip_reason() -> str | None:
  """Why the oneDNN bfloat16 tests skip (None: they run). oneDNN unavailable, or its bf16 kernels the reference
  loops although the CPU has bf16 instructions, is a reason CI fails on; a CPU without them is not."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel
  if (reason := onednn_skip_reason()) is not None:
    return reason
  if onednn.supports(jnp.bfloat16):
    return None
  if cpu_has_bf16():
    return (f'oneDNN has no fast bfloat16 convolutions here ({onednn.conv_kernels(jnp.bfloat16) or "none"}) although '
            'the CPU has AVX512-BF16/AMX')
  return f'{NO_BF16_CPU} (AVX512-BF16 or AMX) for fast bf16 convolutions'


def one_line(reason: str) -> str:
  """oneDNN's reason for being unavailable in one line: its first line and, for a failed build, the compiler's
  first error instead of the compiler's command line."""
  lines = [l.strip() for l in reason.strip().splitlines() if l.strip()] or ['(no reason given)']
  first = lines[0]
  if ' failed: ' in first and len(lines) > 1:
    errors = [l for l in lines[1:] if 'error' in l.lower()] or lines[-1:]
    first = f"{first.split(' failed: ', 1)[0]} failed: {errors[0]}"
  return first


# ------------------------------------------------------------------------------------------------- isolation

_SAVED_ENV: dict[str, str | None] = {}  # the variables _isolate sets, as they were
_ROOT = pytest.StashKey[pathlib.Path]()  # the session's temporary folder
_SESSION_JAX_CACHE = 'JAXSSL_TEST_SESSION_JAX_CACHE'  # the controller's compilation cache, for xdist's workers


def _isolate() -> pathlib.Path:
  """Points the home folder and every cache the code or its libraries write to into a new temporary folder, and
  seeds its oneDNN cache from the user's (read only). Before collection: test modules ask oneDNN at import."""
  from jaxssl.ops import onednn  # pylint: disable=import-outside-toplevel
  user_cache = pathlib.Path(os.environ.get('JAXSSL_CACHE_DIR') or pathlib.Path.home() / '.cache' / 'jaxssl')
  root = pathlib.Path(tempfile.mkdtemp(prefix='jaxssl-tests-')).resolve()
  home = root / 'home'
  paths = {'HOME': home, 'XDG_CACHE_HOME': home / '.cache', 'XDG_CONFIG_HOME': home / '.config',
           'TFDS_DATA_DIR': root / 'tensorflow_datasets', 'JAXSSL_CACHE_DIR': root / 'jaxssl_cache'}
  # One XLA compilation cache for the whole session, xdist's workers and every subprocess included: the same
  # train step compiled by the next run (a resume, a second process, another benchmark cell) is read back.
  shared = os.environ.get(_SESSION_JAX_CACHE) if os.environ.get('PYTEST_XDIST_WORKER') else None
  paths['JAX_COMPILATION_CACHE_DIR'] = pathlib.Path(shared) if shared else root / 'jax_cache'
  paths[_SESSION_JAX_CACHE] = paths['JAX_COMPILATION_CACHE_DIR']
  for name, path in paths.items():
    _SAVED_ENV.setdefault(name, os.environ.get(name))
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ[name] = str(path)
  for name, value in (('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2'),):
    _SAVED_ENV.setdefault(name, os.environ.get(name))
    os.environ[name] = value
  import jax  # pylint: disable=import-outside-toplevel  # imported above (onednn): its config read the env then
  jax.config.update('jax_compilation_cache_dir', str(paths['JAX_COMPILATION_CACHE_DIR']))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)
  if user_cache.is_dir() and os.environ.get('JAXSSL_ONEDNN', '1') != '0':
    try:
      with _env('JAXSSL_CACHE_DIR', str(user_cache)):
        lib = onednn.library_path()  # where the user's cache would hold it; it exists, so nothing is written
      if onednn._intact(lib):  # pylint: disable=protected-access
        for f in (lib, lib.with_name(lib.name + '.sha256')):
          shutil.copy2(f, paths['JAXSSL_CACHE_DIR'] / f.name)
    except (RuntimeError, OSError):
      pass  # no toolchain, or a cache jaxssl would refuse: the session's own build says why when asked
  return root


@contextlib.contextmanager
def _env(name: str, value: str):
  before = os.environ.get(name)
  os.environ[name] = value
  try:
    yield
  finally:
    if before is None:
      del os.environ[name]
    else:
      os.environ[name] = before


def _check_required() -> None:
  """CI's switches, checked before any test runs: one line per missing piece, and the run stops."""
  problems = []
  if _required(REQUIRE_REAL_DATA):
    missing = [what for what, found in (
        ('real Fashion-MNIST (set JAXSSL_FASHION_MNIST_DIR to the folder of its four .gz files)', fashion_mnist_dir()),
        ('the DeepFashion attribute sample (set JAXSSL_DEEPFASHION_SAMPLE_DIR to the folder holding img/ and split/)',
         deepfashion_sample_dir())) if not found]
    if missing:
      problems.append(f'{REQUIRE_REAL_DATA}=1 but {" and ".join(missing)} not found')
  if _required(REQUIRE_ONEDNN):
    reason = onednn_bf16_skip_reason()
    if reason is not None and not reason.startswith(NO_BF16_CPU):
      problems.append(f'{REQUIRE_ONEDNN}=1 but {reason}')
  if problems:
    raise pytest.UsageError('\n'.join(problems))


def pytest_configure(config):
  """Before collection (test modules ask oneDNN at import): the real data's folders, isolation, CI's switches."""
  # grain's multiprocess prefetch reads absl flags; pytest does not parse them.
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.FLAGS.mark_as_parsed()
  for variable, src in (('JAXSSL_FASHION_MNIST_DIR', fashion_mnist_dir()),
                        ('JAXSSL_DEEPFASHION_SAMPLE_DIR', deepfashion_sample_dir())):
    if src:  # absolute (resolved before HOME moves), for the tests and their subprocesses
      os.environ[variable] = src
  config.stash[_ROOT] = _isolate()
  try:
    _check_required()
  except pytest.UsageError:
    pytest_unconfigure(config)  # pytest does not call it when configuring fails
    raise


def pytest_unconfigure(config):
  for name, value in _SAVED_ENV.items():
    if value is None:
      os.environ.pop(name, None)
    else:
      os.environ[name] = value
  if (root := config.stash.get(_ROOT, None)) is not None:
    shutil.rmtree(root, ignore_errors=True)


def ci_failure(skip_reason: str) -> str | None:
  """The one-line failure a skip for ``skip_reason`` becomes under CI's switches (None: it stays a skip): one for
  want of the real files under JAXSSL_REQUIRE_REAL_DATA, one for want of oneDNN under JAXSSL_REQUIRE_ONEDNN."""
  for variable, pattern in ((REQUIRE_REAL_DATA, _REAL_DATA_SKIP), (REQUIRE_ONEDNN, _ONEDNN_SKIP)):
    if _required(variable) and pattern.search(skip_reason) and NO_BF16_CPU not in skip_reason:
      return f'{variable}=1 (CI) but this test skipped: {skip_reason}'
  return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # pylint: disable=unused-argument
  """Under CI's switches a test that skipped for want of the real files or of oneDNN (however it skipped: a
  mark, a fixture, a call in the test) fails, in one line: the switches' check at the start cannot see them all."""
  report = (yield).get_result()
  if report.skipped and not hasattr(report, 'wasxfail'):
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
    if (failure := ci_failure(reason.removeprefix('Skipped: '))) is not None:
      report.outcome, report.longrepr = 'failed', failure


def _needs_real_data(item) -> bool:
  if REAL_DATA_FIXTURES & set(getattr(item, 'fixturenames', ())):
    return True
  return any(_REAL_DATA_SKIP.search(str(mark.kwargs.get('reason', ''))) for mark in item.iter_markers('skipif'))


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook selects by -m
def pytest_collection_modifyitems(items):
  for item in items:
    if _needs_real_data(item):
      item.add_marker(pytest.mark.real_data)


def pytest_xdist_auto_num_workers(config):  # pylint: disable=unused-argument
  """-n auto (pyproject.toml): a worker per core, at most 4. Each worker's XLA already uses every core for its
  larger steps, so more only add memory (2-3 GB each); on 2 cores two workers overlap what runs on one core
  (compiles, process starts, Python): the suite took 16.3 min in one process, 11.5 with two (--dist loadfile: a
  module's tests share its module-scoped fixtures, a trained run or a two-process run, made once).
  PYTEST_XDIST_AUTO_NUM_WORKERS overrides it; -n 0 runs the tests in this process."""
  if os.environ.get('PYTEST_XDIST_AUTO_NUM_WORKERS'):
    return None   # xdist's own hook reads it
  return max(1, min(4, os.cpu_count() or 1))


# ------------------------------------------------------------------------------------------------ real data


@pytest.fixture(scope='session')
def deepfashion_sample():
  src = deepfashion_sample_dir()
  if not src:
    pytest.skip('the real DeepFashion attribute sample was not found: set JAXSSL_DEEPFASHION_SAMPLE_DIR to the '
                'folder holding img/ and split/ (../shared/data/deepfashion_attr_sample beside the checkout)')
  return src


@pytest.fixture(scope='session')
def fmnist_source_dir():
  src = fashion_mnist_dir()
  if not src:
    pytest.skip('real Fashion-MNIST not found: set JAXSSL_FASHION_MNIST_DIR to the folder of the four .gz files')
  return src


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory, fmnist_source_dir):
  """A data_dir with jaxssl_fashion_mnist prepared from the real files (about 12 s, once)."""
  from jaxssl.data import fashion_mnist  # pylint: disable=import-outside-toplevel
  d = str(tmp_path_factory.mktemp('tfds'))
  fashion_mnist.data_source('train', data_dir=d, source_dir=fmnist_source_dir)
  return d


# ------------------------------------------------------------------------------------------- generated data

GENERATED_SPLITS = {'train': 1024, 'test': 256}


@dataclasses.dataclass(frozen=True)
class GeneratedFashionMnist:
  """Four files in the official format with generated content, and the facts to check them by: in the form of
  fashion_mnist's table of the official files (name: sha256 and size of the decompressed bytes) and its split
  sizes."""
  folder: pathlib.Path
  files: dict
  splits: dict
  arrays: dict  # split: (images [N, 28, 28] uint8, labels [N] uint8)


def _idx(array: np.ndarray) -> bytes:
  """An IDX file of unsigned bytes: two zero bytes, type 0x08, the number of dimensions, each size big-endian."""
  return bytes([0, 0, 0x08, array.ndim]) + b''.join(n.to_bytes(4, 'big') for n in array.shape) + array.tobytes()


def generated_garments(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Images a few training steps can tell apart: class c is a bright bar at row 2 + 2c (jittered by a pixel) with
  a stub rising from its left end, so each of the four rotations looks different, on a dim noisy background."""
  labels = rng.integers(0, 10, n).astype(np.uint8)
  images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
  for image, c, dy, dx, level in zip(images, labels, rng.integers(-1, 2, n), rng.integers(-1, 2, n),
                                     rng.integers(150, 256, n)):
    top, left = max(0, 2 + 2 * int(c) + dy), 4 + dx
    image[top:top + 4, left:left + 20] = level
    image[max(0, top - 5):top, left:left + 3] = level
  return images, labels


def write_generated_fashion_mnist(folder: pathlib.Path, splits=None, seed: int = 0) -> GeneratedFashionMnist:
  """Writes train/t10k-images-idx3-ubyte.gz and -labels-idx1-ubyte.gz into ``folder``."""
  splits = dict(splits or GENERATED_SPLITS)
  rng = np.random.default_rng(seed)
  files, arrays = {}, {}
  for split, n in splits.items():
    prefix = {'train': 'train', 'test': 't10k'}[split]
    images, labels = arrays[split] = generated_garments(n, rng)
    for name, array in ((f'{prefix}-images-idx3-ubyte', images), (f'{prefix}-labels-idx1-ubyte', labels)):
      data = _idx(array)
      (folder / f'{name}.gz').write_bytes(gzip.compress(data, mtime=0))
      files[name] = (hashlib.sha256(data).hexdigest(), len(data))
  return GeneratedFashionMnist(folder, files, splits, arrays)


@contextlib.contextmanager
def checked_as_official(source: GeneratedFashionMnist):
  """Within it, jaxssl.data.fashion_mnist takes ``source``'s facts for the official ones: it finds, verifies
  (sha256 and size), reads and prepares the generated files with its own code, as it does the real ones."""
  from jaxssl.data import fashion_mnist  # pylint: disable=import-outside-toplevel
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(fashion_mnist, '_FILES', source.files)
    mp.setattr(fashion_mnist, 'SPLITS', source.splits)
    yield


@pytest.fixture(scope='session')
def generated_fmnist(tmp_path_factory) -> GeneratedFashionMnist:
  return write_generated_fashion_mnist(tmp_path_factory.mktemp('generated_fmnist'))


@pytest.fixture(scope='session')
def generated_tfds_dir(tmp_path_factory, generated_fmnist) -> str:
  """The no-data tier's tfds_dir: a data_dir with jaxssl_fashion_mnist prepared from the generated files by the
  real preparation code (in about a second). Once prepared, reading it needs neither the files nor their facts."""
  from jaxssl.data import fashion_mnist  # pylint: disable=import-outside-toplevel
  d = str(tmp_path_factory.mktemp('generated_tfds'))
  with checked_as_official(generated_fmnist):
    fashion_mnist.data_source('train', data_dir=d, source_dir=str(generated_fmnist.folder))
  return d


def small_config(tfds_dir, **overrides):
  """fmnist_supervised on a slice of the prepared data (real or generated), sized for tests (a few seconds of
  training)."""
  from configs import fmnist_supervised  # pylint: disable=import-outside-toplevel
  c = fmnist_supervised.get_config()
  c.data.data_dir = tfds_dir
  c.data.train_limit = 2048
  c.data.eval_limit = 300
  c.batch_size = 64
  c.eval_batch_size = 128
  c.total_steps = 16
  c.log_every = 1
  c.eval_every = 8
  c.checkpoint_every = 4
  c.optim.warmup_epochs = 0.0
  for key, value in overrides.items():
    node = c
    *path, last = key.split('.')
    for p in path:
      node = node[p]
    node[last] = value
  return c
