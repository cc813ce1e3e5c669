"""Shared fixtures: the real data (Fashion-MNIST prepared once per session into a temporary tfds data_dir, the
DeepFashion attribute sample), generated Fashion-MNIST files that stand in for them, and the ``real_data`` marker.

Two tiers: ``pytest -m real_data`` runs the tests on the real files, ``pytest -m 'not real_data'`` the tests that
need no data files (a machine without them runs this tier and skips nothing for want of data); plain ``pytest``
runs both.
"""

import contextlib
import dataclasses
import gzip
import hashlib
import os
import pathlib
import re
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # configs/ is imported as a package by the tests

# Fixtures that reach for the real files; a test that uses one (directly or through another fixture) is real_data.
REAL_DATA_FIXTURES = frozenset({'fmnist_source_dir', 'tfds_dir', 'deepfashion_sample'})
# A skip mark for want of the real files (test_fashion_mnist.py's `needs_real` checks a module-level path).
_REAL_DATA_SKIP = re.compile(r'\breal\b.*\bnot found\b')


def fashion_mnist_dir() -> str | None:
  """CI sets JAXSSL_FASHION_MNIST_DIR; a checkout beside ../shared finds the data there."""
  for d in (os.environ.get('JAXSSL_FASHION_MNIST_DIR'), REPO.parent / 'shared' / 'data' / 'fashion_mnist',
            '/usr/share/datasets/fashion-mnist'):
    if d and (pathlib.Path(d) / 't10k-labels-idx1-ubyte.gz').exists():
      return str(d)
  return None


def deepfashion_sample_dir() -> str | None:
  """$JAXSSL_DEEPFASHION_SAMPLE_DIR, else ../shared/data/deepfashion_attr_sample beside the checkout."""
  for d in (os.environ.get('JAXSSL_DEEPFASHION_SAMPLE_DIR'),
            REPO.parent / 'shared' / 'data' / 'deepfashion_attr_sample'):
    if d and (pathlib.Path(d) / 'split' / 'train_attr.txt').exists():
      return str(d)
  return None


def pytest_configure(config):  # pylint: disable=unused-argument
  # grain's multiprocess prefetch reads absl flags; pytest does not parse them.
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.FLAGS.mark_as_parsed()
  src = fashion_mnist_dir()
  if src:
    os.environ['JAXSSL_FASHION_MNIST_DIR'] = src


def _needs_real_data(item) -> bool:
  if REAL_DATA_FIXTURES & set(getattr(item, 'fixturenames', ())):
    return True
  return any(_REAL_DATA_SKIP.search(str(mark.kwargs.get('reason', ''))) for mark in item.iter_markers('skipif'))


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook selects by -m
def pytest_collection_modifyitems(items):
  for item in items:
    if _needs_real_data(item):
      item.add_marker(pytest.mark.real_data)


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
